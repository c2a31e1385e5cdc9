// Client HBONE sessions on the native relay, for the pool (pool.ts): the same contract as Node's
// HTTP/2 sessions (client-session.ts). The socket is dialled here in JavaScript, from the source
// pod's netns, and handed over once connected; TLS, the server identity check, HTTP/2 and every
// relayed byte are native. A session counts as open once the server's SETTINGS arrive: in TLS 1.3
// the client finishes its handshake before the server has judged our certificate.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { closedBeforeResponse } from '../client-session.ts';
import { HboneError, type HboneFailure } from '../errors.ts';
import type { HboneConnectRequest, HboneTunnel, PoolSession, SessionOpener } from '../pool.ts';
import type { TunnelResult } from '../tunnel.ts';
import { formatAuthority } from '../authority.ts';
import { openRelaySession, relayAddon, relaySettings, socketFd } from './addon.ts';
import { RelayContexts } from './contexts.ts';

interface Waiter {
  response(status: number): void;
  done(r: TunnelResult, status: number, rst: number): void;
}


class NativeSession implements PoolSession<HboneTunnel> {
  private readonly events = new EventEmitter();
  private readonly waiters = new Map<number, Waiter>();
  id = 0;

  constructor(private readonly target: string) {}

  request(req: HboneConnectRequest, timeoutMs: number, released: () => void): Promise<HboneTunnel> {
    const headers = [':method', 'CONNECT', ':authority', req.authority];
    for (const [k, v] of Object.entries(req.headers)) headers.push(k, v);
    const stream = relayAddon().request(this.id, headers);
    return new Promise((resolve, reject) => {
      let settled = false;
      let finished: { r: TunnelResult } | undefined;
      let relayed: ((r: TunnelResult) => void) | undefined;
      const timer = setTimeout(() => {
        relayAddon().cancel(this.id, stream);
        settle(() => reject(new HboneError('timeout', `HBONE CONNECT ${req.authority}: no response in ${timeoutMs} ms`)));
      }, timeoutMs);
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const relay = (socket: Socket): Promise<TunnelResult> => {
        if (finished) {
          socket.resetAndDestroy();
          return Promise.resolve({ ...finished.r, error: finished.r.error ?? 'stream closed before the tunnel started' });
        }
        const fd = socketFd(socket);
        if (fd < 0) {
          // Never attached, so cancel it: else it holds the pool's stream count, the server's upstream
          // and the connection window until the session ends. Its `done` releases it from the pool.
          relayAddon().cancel(this.id, stream);
          socket.resetAndDestroy();
          return Promise.resolve({ read: 0, written: 0, error: 'socket closed before the tunnel started' });
        }
        relayAddon().attach(this.id, stream, fd); // reset by the relay if the stream is gone meanwhile
        socket.destroy(); // the relay holds its own descriptor of the connection
        return new Promise((r) => (relayed = r));
      };
      this.waiters.set(stream, {
        response: (status) =>
          settle(() => (status === 200 ? resolve({ status, relay }) : reject(new HboneError('status', `HBONE CONNECT ${req.authority}: ${status}`, status)))),
        done: (r, status, rst) => {
          this.waiters.delete(stream);
          released();
          finished = { r };
          settle(() => reject(status === 0 ? closedBeforeResponse(req.authority, rst) : new HboneError('status', `HBONE CONNECT ${req.authority}: ${status}`, status)));
          relayed?.(r);
        },
      });
    });
  }

  close(): void {
    relayAddon().close(this.id, true);
  }

  destroy(): void {
    relayAddon().close(this.id, false);
  }

  once(event: 'goaway' | 'close', listener: () => void): void {
    this.events.once(event, listener);
  }

  onResponse(stream: number, status: number): void {
    this.waiters.get(stream)?.response(status);
  }

  onDone(stream: number, read: number, written: number, status: number, error: string, rst: number): void {
    this.waiters.get(stream)?.done({ read, written, error: error || undefined }, status, rst);
  }

  onGoaway(): void {
    this.events.emit('goaway');
  }

  onClose(): void {
    this.events.emit('close');
  }
}

const failureKind = (kind: string): HboneFailure => (kind === 'timeout' ? 'timeout' : 'tls');

/** Opens sessions on the native relay; credentials become TLS contexts once per certificate. */
export function nativeSessionOpener(contexts = new RelayContexts()): SessionOpener<HboneTunnel> {
  return (p) =>
    new Promise((resolve, reject) => {
      const target = formatAuthority({ address: p.dstAddress, port: p.port });
      const timer = setTimeout(() => reject(new HboneError('timeout', `HBONE connect to ${target} timed out in dial`)), p.timeoutMs);
      p.dial().then(
        (sock) => {
          clearTimeout(timer);
          const fd = socketFd(sock);
          let session: NativeSession;
          try {
            const ctx = contexts.get(p.srcIdentity ?? '', p.credentials, false);
            session = new NativeSession(target);
            let ready = false;
            session.id = openRelaySession('client', fd, ctx, p.dstIdentity, relaySettings(p), {
              ready: () => {
                ready = true;
                resolve(session);
              },
              goaway: () => session.onGoaway(),
              response: (id, status) => session.onResponse(id, status),
              done: (id, read, written, status, error, rst) => session.onDone(id, read, written, status, error, rst),
              close: (kind, reason) => {
                if (!ready) reject(new HboneError(failureKind(kind), `TLS with ${target}: ${reason}`));
                session.onClose();
              },
            });
          } catch (e) {
            reject(new HboneError('tls', `TLS with ${target}: ${(e as Error).message}`, undefined, { cause: e }));
          } finally {
            sock.destroy(); // the relay holds its own descriptor of the connection
          }
        },
        (e: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          reject(new HboneError('dial', `dial ${target}: ${e.code ?? e.message}`, undefined, { cause: e }));
        },
      );
    });
}
