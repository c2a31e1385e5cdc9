// Outbound HBONE: a pool of HTTP/2 sessions keyed by who and where (scope, source identity,
// destination identity, destination address), each carrying up to 100 CONNECT streams.
// Dialling is handed in and runs only when no session of the key has room; concurrent connects for a
// key share one pending dial. Sessions leave the pool on GOAWAY, error or close, and after being
// idle for a while. The contract it keeps with callers and sessions is in contract.ts; which
// transport opens the sessions is handed in (../pool.ts gives Node's HTTP/2 by default), so the pool
// and the session implementations never import each other.
import { HboneError, StreamRefused } from '../errors.ts';
import {
  CLIENT_MAX_STREAMS, CONNECT_TIMEOUT_MS, IDLE_TIMEOUT_MS, PING_INTERVAL_MS, PING_TIMEOUT_MS,
} from '../settings.ts';
import type { HboneConnectRequest, HboneTunnel, PoolKey, PoolSession, SessionOpener } from './contract.ts';

/**
 * How many times a CONNECT a session refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last
 * stream) is tried again on another session. More than once: during a drain, sessions to several
 * draining servers may refuse it in turn. Bounded: a peer that refuses everything costs a few dials.
 */
export const REFUSED_RETRIES = 3;

export interface HbonePoolOptions {
  idleTimeoutMs?: number;
  maxStreamsPerSession?: number;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
}

export interface PoolStats {
  sessions: number;
  streams: number;
  keys: Array<PoolKey & { port: number; streams: number[] }>;
}

interface Pooled<T extends HboneTunnel> {
  id: string;
  session: PoolSession<T>;
  streams: number;
  usable: boolean;
  idle?: NodeJS.Timeout;
}

interface Entry<T extends HboneTunnel> {
  key: PoolKey;
  port: number;
  sessions: Pooled<T>[];
}

/**
 * `T`: what a connect yields, which depends on the sessions `open` makes. The transport is handed in
 * (../pool.ts wires Node's HTTP/2 as the default), so this file knows none of them.
 */
export class SessionPool<T extends HboneTunnel> {
  private readonly entries = new Map<string, Entry<T>>();
  private readonly dialing = new Map<string, Promise<Pooled<T>>>();
  /** Every session opened and not yet closed, for streams it opened without a checkout (adopted()). */
  private readonly bySession = new Map<PoolSession<T>, Pooled<T>>();
  private closed = false;
  private readonly o: Required<HbonePoolOptions>;
  private readonly openSession: SessionOpener<T>;

  constructor(opts: HbonePoolOptions & { open: SessionOpener<T> }) {
    this.openSession = opts.open;
    this.o = {
      idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      maxStreamsPerSession: opts.maxStreamsPerSession ?? CLIENT_MAX_STREAMS,
      connectTimeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      pingIntervalMs: opts.pingIntervalMs ?? PING_INTERVAL_MS,
      pingTimeoutMs: opts.pingTimeoutMs ?? PING_TIMEOUT_MS,
    };
  }

  /** Opens a CONNECT tunnel; throws HboneError (kind dial | tls | timeout | status | stream | closed). */
  async connect(req: HboneConnectRequest): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(req);
      } catch (e) {
        if (!(e instanceof StreamRefused) || attempt >= REFUSED_RETRIES) throw e;
      }
    }
  }

  private async attempt(req: HboneConnectRequest): Promise<T> {
    const pooled = await this.checkout(req);
    try {
      return await pooled.session.request(req, this.o.connectTimeoutMs, () => this.release(pooled));
    } catch (e) {
      if (e instanceof StreamRefused) this.retire(pooled); // closing, gone or refusing: no new streams there
      throw e;
    }
  }

  /**
   * A stream `session` opened without a checkout (the native relay, on an outbound grant): counted
   * like any other, so the session is not closed as idle under it. Returns its release.
   */
  adopted(session: PoolSession<T>): () => void {
    const p = this.bySession.get(session);
    if (!p) return () => {};
    p.streams++;
    clearTimeout(p.idle);
    p.idle = undefined;
    return () => this.release(p);
  }

  /** Sessions still taking streams, per key (retired ones finishing their streams are not counted). */
  stats(): PoolStats {
    const keys = [...this.entries.values()].map((e) => ({ ...e.key, port: e.port, streams: e.sessions.map((s) => s.streams) }));
    return {
      sessions: keys.reduce((n, k) => n + k.streams.length, 0),
      streams: keys.reduce((n, k) => n + k.streams.reduce((a, b) => a + b, 0), 0),
      keys,
    };
  }

  /** Stops pooling; open streams finish on their sessions (GOAWAY), unless `force`. */
  close(force = false): void {
    this.closed = true;
    for (const e of [...this.entries.values()]) {
      for (const p of [...e.sessions]) {
        this.retire(p);
        if (force) p.session.destroy();
        else p.session.close();
      }
    }
  }

  private async checkout(req: HboneConnectRequest): Promise<Pooled<T>> {
    const id = JSON.stringify([req.key.scope, req.key.srcIdentity, req.key.dstIdentity, req.key.dstAddress, req.port]);
    for (;;) {
      if (this.closed) throw new HboneError('closed', 'HBONE pool is closed');
      const free = this.entries.get(id)?.sessions.find((s) => s.usable && s.streams < this.o.maxStreamsPerSession);
      if (free) {
        free.streams++; // reserved synchronously, so concurrent checkouts never overfill a session
        clearTimeout(free.idle);
        free.idle = undefined;
        return free;
      }
      let pending = this.dialing.get(id);
      if (!pending) {
        pending = this.open(id, req);
        this.dialing.set(id, pending);
      }
      // Dial and TLS failures reach every waiter; success loops back to reserve a stream.
      const opened = await pending;
      // Gone as it opened (a GOAWAY with the server's SETTINGS: a draining or hostile server): one
      // refusal, which connect() counts, rather than dialling again here without end.
      if (!opened.usable) throw new StreamRefused('stream', `HBONE session to ${req.key.dstAddress}:${req.port} went away as it opened`);
    }
  }

  private async open(id: string, req: HboneConnectRequest): Promise<Pooled<T>> {
    try {
      const session = await this.openSession({
        dial: req.dial,
        credentials: req.credentials,
        srcIdentity: req.key.srcIdentity,
        dstIdentity: req.key.dstIdentity,
        dstAddress: req.key.dstAddress,
        port: req.port,
        timeoutMs: this.o.connectTimeoutMs,
        pingIntervalMs: this.o.pingIntervalMs,
        pingTimeoutMs: this.o.pingTimeoutMs,
      });
      const pooled: Pooled<T> = { id, session, streams: 0, usable: true };
      let entry = this.entries.get(id);
      if (!entry) this.entries.set(id, (entry = { key: { ...req.key }, port: req.port, sessions: [] }));
      entry.sessions.push(pooled);
      this.bySession.set(session, pooled);
      session.once('goaway', () => this.retire(pooled));
      session.once('close', () => {
        this.bySession.delete(session);
        this.retire(pooled);
      });
      if (this.closed) session.close();
      return pooled;
    } finally {
      this.dialing.delete(id); // before waiters resume, so a full session makes the next one dial anew
    }
  }

  private release(p: Pooled<T>): void {
    p.streams--;
    if (p.streams > 0) return;
    if (!p.usable) return void p.session.close();
    p.idle = setTimeout(() => {
      this.retire(p);
      p.session.close();
    }, this.o.idleTimeoutMs);
    p.idle.unref();
  }

  /** Out of the pool: no new streams; the ones it carries run to their end. */
  private retire(p: Pooled<T>): void {
    if (!p.usable) return;
    p.usable = false;
    clearTimeout(p.idle);
    const e = this.entries.get(p.id);
    const i = e ? e.sessions.indexOf(p) : -1;
    if (e && i >= 0) e.sessions.splice(i, 1);
    if (e?.sessions.length === 0) this.entries.delete(p.id);
    if (p.streams === 0) p.session.close();
  }
}
