// HTTP/2 sessions to endpoints, kept open and shared by requests (the cost of a tunnel per request
// is a CONNECT round trip, and for gRPC a new HTTP/2 handshake too): one session per (endpoint,
// identity), each inside its own HBONE tunnel under the waypoint's identity, HTTP/2 with prior
// knowledge. Bounded: at most `maxSessions` (the oldest is closed gracefully, its streams finish,
// to make room), each closed after `idleMs` with no stream. A session that fails, is reset, or
// receives GOAWAY leaves the pool at once, so the next request opens a new one: an endpoint that
// restarts costs the requests in flight on it, never the ones after. The transport is HBONE unless
// the pool is given another (the authorizer channels pool plaintext sessions the same way).
import { whenConnected } from './h2-ready.ts';
import http2, { type ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import { formatAuthority } from '../../hbone/authority.ts';
import type { Endpoint } from '../router/table.ts';
import { openTunnel, type UpstreamOptions } from './forward.ts';

export interface H2Limits {
  maxSessions: number;
  idleMs: number;
}

export const DEFAULT_H2_LIMITS: H2Limits = { maxSessions: 1024, idleMs: 60_000 };

export class H2Sessions {
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();
  /** The settled ones, to skip a session that closed while its events are still on their way. */
  private readonly ready = new Map<Promise<ClientHttp2Session>, ClientHttp2Session>();
  private readonly open = new Set<ClientHttp2Session>();

  constructor(
    private readonly o: UpstreamOptions,
    private readonly limits: H2Limits = DEFAULT_H2_LIMITS,
    /** The byte stream a session runs over (default: an HBONE tunnel under the waypoint's identity). */
    private readonly transport: (endpoint: Endpoint, identity: string) => Promise<Duplex> = (e, id) => openTunnel(o, e, id, {}),
  ) {}

  /** Sessions held now (open or opening), for leak checks. */
  get size(): number {
    return this.sessions.size;
  }

  /** A usable session to `endpoint`: the pooled one, or a new one. Throws HboneError when the tunnel fails. */
  get(endpoint: Endpoint, identity: string): Promise<ClientHttp2Session> {
    const key = `${identity}|${formatAuthority(endpoint)}`;
    const held = this.sessions.get(key);
    const s = held && this.ready.get(held);
    if (held && !(s && (s.closed || s.destroyed))) return held;
    if (held) this.forget(key, held);
    while (this.sessions.size >= this.limits.maxSessions) {
      const [oldest, p] = this.sessions.entries().next().value as [string, Promise<ClientHttp2Session>];
      this.forget(oldest, p);
      void p.then((old) => old.close(), () => {});
    }
    const p = this.connect(key, endpoint, identity);
    this.sessions.set(key, p);
    p.then(
      (session) => {
        if (this.sessions.get(key) === p) this.ready.set(p, session);
      },
      () => this.forget(key, p),
    );
    return p;
  }

  /** Closes every session (drain: `graceful` lets open streams finish). */
  close(graceful = true): void {
    this.sessions.clear();
    this.ready.clear();
    for (const s of this.open) {
      if (graceful) s.close();
      else s.destroy();
    }
  }

  private forget(key: string, p: Promise<ClientHttp2Session>): void {
    if (this.sessions.get(key) === p) this.sessions.delete(key);
    this.ready.delete(p);
  }

  private async connect(key: string, endpoint: Endpoint, identity: string): Promise<ClientHttp2Session> {
    const tunnel = await this.transport(endpoint, identity);
    const session = http2.connect(`http://${formatAuthority(endpoint)}`, {
      createConnection: () => tunnel as never,
      settings: { enablePush: false },
      maxSessionMemory: 16,
    });
    const p = this.sessions.get(key);
    const leave = () => p && this.forget(key, p);
    this.open.add(session);
    session.on('error', leave);
    session.once('goaway', leave);
    session.once('close', () => {
      leave();
      this.open.delete(session);
      if (!tunnel.destroyed) tunnel.destroy();
    });
    tunnel.once('close', () => session.destroy());
    // No stream for idleMs: closed (GOAWAY), so idle endpoints do not hold tunnels forever.
    session.setTimeout(this.limits.idleMs, () => session.close());
    await whenConnected(session);
    return session;
  }
}
