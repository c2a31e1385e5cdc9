// Idle HTTP/1.1 tunnels to endpoints, kept for the next request instead of a CONNECT per request:
// after a response that leaves the connection reusable (both sides keep-alive, the request fully
// sent, the response fully read, Node's parser detached), the tunnel waits here, keyed by endpoint
// and identity. Bounded: at most `maxIdlePerEndpoint` per endpoint and `maxIdle` in all (more are
// closed), each closed after `idleMs` or sooner when the endpoint's `Keep-Alive: timeout=` hint says
// so (less a second, as Node's agent does, to avoid reusing one the endpoint is closing). A tunnel
// that ends, fails, or sends a byte while idle leaves the pool, so an endpoint that restarts costs
// at most the requests in flight on it.
import type { Duplex } from 'node:stream';
import { formatAuthority } from '../../hbone/authority.ts';
import type { Endpoint } from '../router/table.ts';
import { endTunnel } from './end-tunnel.ts';
import { openTunnel, type UpstreamOptions } from './forward.ts';

export interface H1Limits {
  maxIdlePerEndpoint: number;
  maxIdle: number;
  idleMs: number;
}

export const DEFAULT_H1_LIMITS: H1Limits = { maxIdlePerEndpoint: 16, maxIdle: 1024, idleMs: 30_000 };

interface Idle {
  key: string;
  timer: NodeJS.Timeout;
  drop: () => void;
}

export class H1Tunnels {
  private readonly idle = new Map<string, Duplex[]>();
  private readonly held = new Map<Duplex, Idle>();

  constructor(
    private readonly o: UpstreamOptions,
    private readonly limits: H1Limits = DEFAULT_H1_LIMITS,
  ) {}

  /** Idle tunnels held now. */
  get size(): number {
    return this.held.size;
  }

  /** An idle tunnel to `endpoint` if one is held, else a new one (throws HboneError when it cannot be opened). */
  async acquire(endpoint: Endpoint, identity: string): Promise<{ tunnel: Duplex; reused: boolean }> {
    const list = this.idle.get(keyOf(endpoint, identity));
    for (let t = list?.pop(); t; t = list?.pop()) {
      this.unhold(t);
      if (!t.destroyed && t.writable && !t.readableEnded) return { tunnel: t, reused: true };
    }
    return { tunnel: await openTunnel(this.o, endpoint, identity, {}), reused: false };
  }

  /** Takes a tunnel back after a reusable exchange; closes it when the pool is full. */
  release(t: Duplex, endpoint: Endpoint, identity: string, hintMs?: number): void {
    const key = keyOf(endpoint, identity);
    const list = this.idle.get(key) ?? [];
    const ms = Math.min(this.limits.idleMs, hintMs ?? Infinity);
    if (t.destroyed || !t.writable) return void t.destroy();
    // Not kept: ended, not reset (a reset per request would trip the server's rapid-reset limit; end-tunnel.ts).
    if (ms <= 0 || list.length >= this.limits.maxIdlePerEndpoint || this.held.size >= this.limits.maxIdle) return void endTunnel(t);
    const drop = () => {
      this.unhold(t);
      t.destroy();
    };
    const expire = () => {
      this.unhold(t);
      endTunnel(t);
    };
    t.on('data', drop); // an idle connection has nothing to say; bytes now are a broken or hostile endpoint
    t.once('end', drop);
    t.once('close', drop);
    t.on('error', drop);
    this.held.set(t, { key, timer: setTimeout(expire, ms).unref(), drop });
    list.push(t);
    this.idle.set(key, list);
  }

  /** Closes every idle tunnel. */
  close(): void {
    for (const t of [...this.held.keys()]) {
      this.unhold(t);
      t.destroy();
    }
  }

  private unhold(t: Duplex): void {
    const h = this.held.get(t);
    if (!h) return;
    this.held.delete(t);
    clearTimeout(h.timer);
    t.off('data', h.drop);
    t.off('end', h.drop);
    t.off('close', h.drop);
    t.off('error', h.drop);
    const list = this.idle.get(h.key);
    const i = list?.indexOf(t) ?? -1;
    if (i >= 0) list!.splice(i, 1);
    if (list && !list.length) this.idle.delete(h.key);
  }
}

const keyOf = (e: Endpoint, identity: string) => `${identity}|${formatAuthority(e)}`;

