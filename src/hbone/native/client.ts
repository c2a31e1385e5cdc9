// Client HBONE sessions on the native relay, for the pool (client/pool.ts): the same contract
// (client/contract.ts) and the same deadlines and failure kinds (client/failures.ts) as Node's HTTP/2
// sessions (node/client.ts). The socket is dialled here in JavaScript, from the source pod's netns,
// and handed over once connected; TLS, the server identity check, HTTP/2 and every relayed byte are
// native. A session counts as open once the server's SETTINGS arrive: in TLS 1.3 the client finishes
// its handshake before the server has judged our certificate.
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import { constants } from 'node:http2';
import type { Socket } from 'node:net';
import type { HboneConnectRequest, HboneTunnel, OutboundReuse, PoolSession, SessionOpener, TunnelResult } from '../client/contract.ts';
import { HboneError } from '../errors.ts';
import { CLIENT_MAX_STREAMS } from '../settings.ts';
import { PendingConnect, SOCKET_CLOSED_BEFORE_TUNNEL, SessionOpening, STREAM_CLOSED_BEFORE_TUNNEL, sessionUnusable } from '../client/failures.ts';
import { openRelaySession, relayAddon, relaySettings, socketFd, type ExpressOut } from './addon.ts';
import { RelayContexts } from './contexts.ts';

interface Waiter {
  response(status: number): void;
  done(r: TunnelResult, status: number, rst: number, handedBack?: number): void;
}

/** Open native client sessions by the relay's number: where an `xout` stream belongs (adoptExpress). */
const sessionsById = new Map<number, NativeSession>();

/**
 * A stream the relay opened on an outbound grant was refused by the peer before it processed it:
 * the app's socket, `fd`, is the caller's again, to try on another session.
 */
export class ExpressHandedBack extends Error {
  constructor(readonly fd: number) {
    super('refused unprocessed; handed back');
  }
}

class NativeSession implements PoolSession<HboneTunnel> {
  private readonly events = new EventEmitter();
  private readonly waiters = new Map<number, Waiter>();
  /** What already happened: the pool listens only once it holds the session, which may be after a GOAWAY. */
  private readonly seen = new Set<'goaway' | 'close'>();
  id = 0;

  request(req: HboneConnectRequest, timeoutMs: number, released: () => void): Promise<HboneTunnel> {
    if (this.seen.has('close')) {
      released();
      return Promise.reject(sessionUnusable(new Error('session closed')));
    }
    const headers = [':method', 'CONNECT', ':authority', req.authority];
    for (const [k, v] of Object.entries(req.headers)) headers.push(k, v);
    // Early attach: the relay holds a duplicate of the app's socket and relays from it on 200 by itself.
    let early = req.appFd !== undefined && req.appFd >= 0;
    let stream: number;
    try {
      stream = early ? relayAddon().request(this.id, headers, req.appFd) : relayAddon().request(this.id, headers);
    } catch (e) {
      if (!early) throw e;
      // No duplicate (EMFILE, say): the late attach, which reports its own failure at relay().
      early = false;
      stream = relayAddon().request(this.id, headers);
    }
    const pending = new PendingConnect<HboneTunnel>(req.authority, timeoutMs, () => relayAddon().cancel(this.id, stream));
    let finished: { r: TunnelResult } | undefined;
    let relayed: ((r: TunnelResult) => void) | undefined;
    const relay = (socket: Socket | number): Promise<TunnelResult> => {
      if (early) {
        // Attached by the relay when the 200 arrived: its duplicate carries the tunnel (and closes or
        // resets the connection at its end); ours is only closed, never reset, whatever happened since.
        if (typeof socket === 'number') closeSync(socket);
        else socket.destroy();
        return finished ? Promise.resolve(finished.r) : new Promise((r) => (relayed = r));
      }
      const reset = () => (typeof socket === 'number' ? relayAddon().resetFd(socket) : socket.resetAndDestroy());
      if (finished) {
        reset();
        return Promise.resolve({ ...finished.r, error: finished.r.error ?? STREAM_CLOSED_BEFORE_TUNNEL });
      }
      const fd = typeof socket === 'number' ? socket : socketFd(socket);
      if (fd < 0) {
        // Never attached, so cancel it: else it holds the pool's stream count, the server's upstream
        // and the connection window until the session ends. Its `done` releases it from the pool.
        relayAddon().cancel(this.id, stream);
        if (typeof socket !== 'number') socket.resetAndDestroy();
        return Promise.resolve({ sent: 0, received: 0, error: SOCKET_CLOSED_BEFORE_TUNNEL });
      }
      relayAddon().attach(this.id, stream, fd); // reset by the relay if the stream is gone meanwhile
      // The relay holds its own descriptor of the connection.
      if (typeof socket === 'number') closeSync(socket);
      else socket.destroy();
      return new Promise((r) => (relayed = r));
    };
    this.waiters.set(stream, {
      response: (status) => {
        if (status === 200 && req.reuse) this.grant(req, req.reuse);
        pending.response(status, () => ({ status: 200, relay }));
      },
      done: (r, status, rst) => {
        this.waiters.delete(stream);
        released();
        finished = { r };
        pending.closed(rst, status);
        relayed?.(r);
      },
    });
    return pending.promise;
  }

  /** The relay may open this CONNECT again by itself (native/relay/express_out.h). */
  private grant(req: HboneConnectRequest, r: OutboundReuse): void {
    relayAddon().outGrant(r.listener, r.orig.address, r.orig.port, r.generation, r.tag, this.id, CLIENT_MAX_STREAMS, req.authority,
      r.forwardedPrefix, r.forwardedSuffix, r.headers);
  }

  /**
   * A stream the relay opened on a grant (`xout`): resolves when it ends; rejects as request() does
   * (a refusal, no response in time), or with ExpressHandedBack.
   */
  adopt(handle: number, authority: string, timeoutMs: number, released: () => void): Promise<TunnelResult> {
    return new Promise<TunnelResult>((resolve, reject) => {
      const pending = new PendingConnect<void>(authority, timeoutMs, () => relayAddon().cancel(this.id, handle));
      pending.promise.catch(reject);
      this.waiters.set(handle, {
        response: (status) => void pending.response(status, () => undefined),
        done: (r, status, rst, handedBack) => {
          this.waiters.delete(handle);
          released();
          if (handedBack !== undefined) reject(new ExpressHandedBack(handedBack));
          pending.closed(rst, status); // rejects, unless a response settled it
          if (status === 200) resolve(r);
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
    // A drained server's GOAWAY may come with its SETTINGS, in the same batch of events as `ready`.
    if (this.seen.has(event)) return listener();
    this.events.once(event, listener);
  }

  onResponse(stream: number, status: number): void {
    this.waiters.get(stream)?.response(status);
  }

  /** `read` and `written`: the relay's counts on the app's socket, which is where `sent` comes from. */
  onDone(stream: number, read: number, written: number, status: number, error: string, rst: number, handedBack?: number): void {
    const w = this.waiters.get(stream);
    if (w) w.done({ sent: read, received: written, error: error || undefined }, status, rst, handedBack);
    else if (handedBack !== undefined) relayAddon().resetFd(handedBack); // nobody to try it again
  }

  onGoaway(): void {
    this.seen.add('goaway');
    this.events.emit('goaway');
  }

  onClose(): void {
    this.seen.add('close');
    sessionsById.delete(this.id);
    // The relay reports every stream it started before the session's `close`; one still waiting was
    // requested after the session had ended (its refusal can no longer reach this session): refused.
    for (const w of [...this.waiters.values()]) w.done({ sent: 0, received: 0 }, 0, constants.NGHTTP2_REFUSED_STREAM);
    this.events.emit('close');
  }
}

/** Opens sessions on the native relay; credentials become TLS contexts once per certificate. */
export function nativeSessionOpener(contexts = new RelayContexts()): SessionOpener<HboneTunnel> {
  return (p) => {
    const o = new SessionOpening<NativeSession>(p);
    o.dial((sock) => {
      // The relay keeps its own deadline from here (its connect timeout, relaySettings(p)).
      o.deadlineDone();
      const fd = socketFd(sock);
      try {
        const ctx = contexts.get(p.srcIdentity ?? '', p.credentials, false);
        const session = new NativeSession();
        session.id = openRelaySession('client', fd, ctx, p.dstIdentity, relaySettings(p), {
          ready: () => void o.succeed(session),
          goaway: () => session.onGoaway(),
          response: (id, status) => session.onResponse(id, status),
          done: (id, read, written, status, error, rst, handedBack) => session.onDone(id, read, written, status, error, rst, handedBack),
          close: (kind, reason) => {
            o.failTls(reason, undefined, kind === 'timeout' ? 'timeout' : 'tls'); // nothing once ready
            session.onClose();
          },
        });
        sessionsById.set(session.id, session);
      } catch (e) {
        o.failTls((e as Error).message, e);
      } finally {
        sock.destroy(); // the relay holds its own descriptor of the connection
      }
    });
    return o.promise;
  };
}

/** The pool's side of an adopted stream: counts it while it runs (SessionPool.adopted). */
export interface AdoptingPool {
  adopted(session: PoolSession<HboneTunnel>): () => void;
}

/**
 * Takes up a connection the relay opened on an outbound grant (ExpressOut): the pool counts its
 * stream, and the promise settles as adopt() says. Called as its `xout` is dispatched, before any
 * event of its stream.
 */
export function adoptExpress(pool: AdoptingPool, x: ExpressOut, authority: string, timeoutMs: number): Promise<TunnelResult> {
  const session = sessionsById.get(x.session);
  // The relay reports a stream before its session's `close`: a session missing here was never this module's.
  if (!session) return Promise.reject(new HboneError('closed', `HBONE session ${x.session} is not open here`));
  return session.adopt(x.handle, authority, timeoutMs, pool.adopted(session));
}
