// Outbound HBONE: a pool of HTTP/2 sessions keyed by who and where (scope, source identity,
// destination identity, destination address), each carrying up to 100 CONNECT streams.
// Dialling is handed in and runs only when no session of the key has room; concurrent connects for a
// key share one pending dial. Sessions leave the pool on GOAWAY, error or close, and after being
// idle for a while.
import { constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { openSession } from './client-session.ts';
import { HboneError } from './errors.ts';
import {
  CLIENT_MAX_STREAMS, CONNECT_TIMEOUT_MS, IDLE_TIMEOUT_MS, PING_INTERVAL_MS, PING_TIMEOUT_MS, type Credentials,
} from './settings.ts';

export interface PoolKey {
  /** Whose netns the sockets are made in, e.g. the source pod uid. */
  scope: string;
  srcIdentity: string;
  /** The one SPIFFE URI the server must present. */
  dstIdentity: string;
  dstAddress: string;
}

export interface HboneConnectRequest {
  key: PoolKey;
  port: number;
  /** The CONNECT target, `ip:port`. */
  authority: string;
  /** Sent as given: forwarded, baggage, traceparent. */
  headers: Record<string, string>;
  credentials: Credentials;
  /** A raw TCP socket to dstAddress:port, connected from inside the source pod's netns. */
  dial: () => Promise<Socket>;
}

export interface HboneTunnel {
  status: 200;
  /** The tunnel; relay it with tunnel(). An 'error' listener is attached: failures surface on 'close'. */
  stream: ClientHttp2Stream;
}

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

interface Pooled {
  id: string;
  session: ClientHttp2Session;
  streams: number;
  usable: boolean;
  idle?: NodeJS.Timeout;
}

interface Entry {
  key: PoolKey;
  port: number;
  sessions: Pooled[];
}

/** A stream refused before it started may be retried once on another session. */
class Refused extends HboneError {}

export class HbonePool {
  private readonly entries = new Map<string, Entry>();
  private readonly dialing = new Map<string, Promise<Pooled>>();
  private closed = false;
  private readonly o: Required<HbonePoolOptions>;

  constructor(opts: HbonePoolOptions = {}) {
    this.o = {
      idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      maxStreamsPerSession: opts.maxStreamsPerSession ?? CLIENT_MAX_STREAMS,
      connectTimeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      pingIntervalMs: opts.pingIntervalMs ?? PING_INTERVAL_MS,
      pingTimeoutMs: opts.pingTimeoutMs ?? PING_TIMEOUT_MS,
    };
  }

  /** Opens a CONNECT tunnel; throws HboneError (kind dial | tls | timeout | status | stream | closed). */
  async connect(req: HboneConnectRequest): Promise<HboneTunnel> {
    for (let attempt = 0; ; attempt++) {
      const pooled = await this.checkout(req);
      try {
        return await this.request(pooled, req);
      } catch (e) {
        if (!(e instanceof Refused) || attempt > 0) throw e;
      }
    }
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

  private async checkout(req: HboneConnectRequest): Promise<Pooled> {
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
      await pending; // dial and TLS failures reach every waiter; success loops back to reserve a stream
    }
  }

  private async open(id: string, req: HboneConnectRequest): Promise<Pooled> {
    try {
      const session = await openSession({
        dial: req.dial,
        credentials: req.credentials,
        dstIdentity: req.key.dstIdentity,
        dstAddress: req.key.dstAddress,
        port: req.port,
        timeoutMs: this.o.connectTimeoutMs,
        pingIntervalMs: this.o.pingIntervalMs,
        pingTimeoutMs: this.o.pingTimeoutMs,
      });
      const pooled: Pooled = { id, session, streams: 0, usable: true };
      let entry = this.entries.get(id);
      if (!entry) this.entries.set(id, (entry = { key: { ...req.key }, port: req.port, sessions: [] }));
      entry.sessions.push(pooled);
      session.once('goaway', () => this.retire(pooled));
      session.once('close', () => this.retire(pooled));
      if (this.closed) session.close();
      return pooled;
    } finally {
      this.dialing.delete(id); // before waiters resume, so a full session makes the next one dial anew
    }
  }

  private request(p: Pooled, req: HboneConnectRequest): Promise<HboneTunnel> {
    let stream: ClientHttp2Stream;
    try {
      stream = p.session.request({ ':method': 'CONNECT', ':authority': req.authority, ...req.headers }, { endStream: false });
    } catch (e) {
      this.release(p);
      this.retire(p); // closing or gone: no new streams here
      return Promise.reject(new Refused('stream', `HBONE session unusable: ${(e as Error).message}`, undefined, { cause: e }));
    }
    stream.on('error', () => {});
    stream.once('close', () => this.release(p));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new HboneError('timeout', `HBONE CONNECT ${req.authority}: no response in ${this.o.connectTimeoutMs} ms`));
      }, this.o.connectTimeoutMs);
      const onClose = () => {
        clearTimeout(timer);
        const code = stream.rstCode ?? constants.NGHTTP2_NO_ERROR;
        const msg = `HBONE CONNECT ${req.authority}: stream closed before a response (code ${code})`;
        reject(code === constants.NGHTTP2_REFUSED_STREAM ? new Refused('stream', msg) : new HboneError('stream', msg));
      };
      stream.once('close', onClose);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        stream.off('close', onClose);
        const status = Number(headers[':status']);
        if (status === 200) return resolve({ status, stream });
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new HboneError('status', `HBONE CONNECT ${req.authority}: ${status}`, status));
      });
    });
  }

  private release(p: Pooled): void {
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
  private retire(p: Pooled): void {
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
