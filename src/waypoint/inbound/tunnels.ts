// Tunnels handed over by the HBONE server (acceptStream) become HTTP connections: sniff the
// protocol (on a port of undeclared protocol, what is not HTTP goes to the TCP relay), then give the Duplex to one shared node:http server (HTTP/1.1) or node:http2 server
// (HTTP/2 with prior knowledge), as if it were an accepted socket. Bounds a hostile client: header
// size (431), a deadline for a request's headers (slowloris) and for the next request on an idle
// keep-alive tunnel, HTTP/2 header list size and session memory; a malformed request is answered
// 400 and the tunnel closed. Every tunnel is counted until it closes, for drains and leak checks.
//
// drain() (the waypoint's SIGTERM): an HTTP/1.1 tunnel's next response says `Connection: close` and
// the tunnel ends after it; one idle between requests ends at once; requests that arrive after the
// closing response are not served (a client that keeps sending cannot keep a tunnel open); an
// HTTP/2 session gets GOAWAY and its open streams finish. Upgraded tunnels and TCP are left to end
// on their own: the waypoint's deadline (waypoint.ts) closes whatever is left.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { buffersOnly } from '../buffers-only.ts';
import { sniff } from './sniff.ts';
import type { TunnelContext } from './request.ts';

export interface HttpLimits {
  /** Largest request header block (HTTP/1.1: request line and headers; HTTP/2: the header list). */
  maxHeaderBytes: number;
  /** A request's headers must be complete this long after the tunnel opens. */
  headersTimeoutMs: number;
  /** An idle keep-alive tunnel (no request in flight) is closed after this. */
  idleTimeoutMs: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = { maxHeaderBytes: 60 * 1024, headersTimeoutMs: 10_000, idleTimeoutMs: 60_000 };

type Handler = (ctx: TunnelContext, req: IncomingMessage | Http2ServerRequest, res: ServerResponse | Http2ServerResponse) => void;

/** An HTTP/1.1 request that asks to switch protocols: the handler owns the tunnel from here on (inbound/upgrade.ts). */
export type UpgradeHandler = (ctx: TunnelContext, req: IncomingMessage, tunnel: Duplex, head: Buffer) => void;

/** A request the parser refused: counted and logged by the caller like any other. */
export interface ProtocolError {
  ctx: TunnelContext;
  status: number;
  reason: string;
}

interface H1State {
  ctx: TunnelContext;
  timer?: NodeJS.Timeout;
  inFlight: number;
  /** Requests taken so far: a tunnel that had one and has none in flight is an idle keep-alive. */
  served: number;
  /** The newest response in flight: the one a drain marks `Connection: close` (pipelined ones before it still go out). */
  newest?: ServerResponse;
  /** The parser let go of it (an upgrade): no longer HTTP/1.1, left to end on its own. */
  upgraded?: boolean;
  /** Draining, and the closing response is chosen: no further request is served on this tunnel. */
  closing?: boolean;
}

export class HttpTunnels {
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly h1State = new WeakMap<object, H1State>();
  private readonly h2Ctx = new WeakMap<Http2Session, TunnelContext>();
  private handing?: TunnelContext;
  private readonly open = new Set<Duplex>();
  private readonly sessions = new Set<Http2Session>();
  /** HTTP/1.1 tunnels by their state, for drain(). */
  private readonly h1Open = new Map<Duplex, H1State>();
  private draining = false;
  /** Takes HTTP/1.1 upgrade requests; unset, they are refused (403). */
  onUpgrade?: UpgradeHandler;
  /** Takes a tunnel that is not HTTP on a port of undeclared protocol (ctx.tcpFallback); unset, it is closed. */
  onTcp?: (ctx: TunnelContext, tunnel: Duplex) => void;

  constructor(
    private readonly limits: HttpLimits,
    private readonly handler: Handler,
    private readonly onProtocolError: (e: ProtocolError) => void,
  ) {
    this.h1 = http.createServer({ maxHeaderSize: limits.maxHeaderBytes });
    // The deadlines are ours (arm()): Node's own checks run only for a server that listens.
    this.h1.keepAliveTimeout = 0;
    this.h1.timeout = 0;
    this.h1.on('request', (req: IncomingMessage, res: ServerResponse) => this.onH1Request(req, res));
    this.h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onH1Upgrade(req, socket, head));
    this.h1.on('clientError', (e: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(e, socket));
    this.h2 = http2.createServer({
      maxSessionMemory: 16,
      maxHeaderListPairs: 256,
      settings: { maxHeaderListSize: limits.maxHeaderBytes, enablePush: false, maxConcurrentStreams: 100 },
    });
    this.h2.on('session', (s: Http2Session) => this.onH2Session(s));
    this.h2.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => {
      const ctx = this.h2Ctx.get(req.stream.session as Http2Session);
      if (!ctx) return void req.stream.destroy();
      this.handler(ctx, req, res);
    });
    this.h2.on('sessionError', () => {});
  }

  stats(): { tunnels: number; h2Sessions: number } {
    return { tunnels: this.open.size, h2Sessions: this.sessions.size };
  }

  /** Takes a tunnel: sniffs its protocol and hands it to the right server. */
  accept(d: Duplex, ctx: TunnelContext): void {
    this.open.add(d);
    d.once('close', () => this.open.delete(d));
    d.on('error', () => {});
    void sniff(d, this.limits.headersTimeoutMs, ctx.tcpFallback !== undefined).then((proto) => {
      if (proto === 'closed') return void d.destroy();
      if (proto === 'tcp') return this.onTcp ? this.onTcp(ctx, d) : void d.destroy();
      if (proto === 'h1') return this.toH1(d, ctx);
      this.handing = ctx;
      try {
        this.h2.emit('connection', d);
      } finally {
        this.handing = undefined;
      }
    });
  }

  /**
   * Ends HTTP gracefully (see the file's head): idle HTTP/1.1 tunnels now, busy ones after their
   * closing response, HTTP/2 sessions by GOAWAY once their streams finish. Tunnels that arrive
   * (or finish sniffing) later are served one request, or GOAWAY, the same way.
   */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    for (const [d, st] of this.h1Open) this.closeH1(d, st);
    for (const s of this.sessions) s.close();
  }

  /** Closes every tunnel now (the HBONE server's drain resets their streams too). */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
    for (const d of this.open) d.destroy();
  }

  private toH1(d: Duplex, ctx: TunnelContext): void {
    buffersOnly(d);
    const st: H1State = { ctx, inFlight: 0, served: 0 };
    this.h1State.set(d, st);
    this.h1Open.set(d, st);
    this.arm(d, st, this.limits.headersTimeoutMs);
    d.once('close', () => {
      clearTimeout(st.timer);
      this.h1Open.delete(d);
    });
    this.h1.emit('connection', d);
  }

  /**
   * Draining: the tunnel's last response is the newest in flight (it says `Connection: close`, and
   * Node ends the tunnel after it), or, when that one's headers are out already, the tunnel ends
   * once nothing is in flight. Idle between requests: ended now. A tunnel that has not had its
   * first request yet keeps waiting for it (its client opened it before the drain; the headers
   * deadline still holds), and onH1Request closes after that one.
   */
  private closeH1(d: Duplex, st: H1State): void {
    if (st.upgraded || st.closing || d.destroyed) return;
    if (st.inFlight === 0) {
      if (st.served > 0) {
        st.closing = true;
        this.endSoon(d);
      }
      return;
    }
    st.closing = true;
    if (st.newest && !st.newest.headersSent) st.newest.shouldKeepAlive = false;
  }

  /** Until the next request's headers arrive, the tunnel must not sit idle longer than `ms`. */
  private arm(d: Duplex, st: H1State, ms: number): void {
    clearTimeout(st.timer);
    st.timer = setTimeout(() => d.destroy(), ms);
    st.timer.unref();
  }

  private onH1Request(req: IncomingMessage, res: ServerResponse): void {
    const d = req.socket as unknown as Duplex;
    const st = this.h1State.get(d);
    if (!st) return void d.destroy();
    clearTimeout(st.timer);
    // After the closing response (it is queued before this one, and Node ends the tunnel after it):
    // not served, never sent upstream. The tunnel ends within endSoon's grace, or at the deadline.
    if (st.closing) return;
    st.inFlight++;
    st.served++;
    st.newest = res;
    if (this.draining) {
      st.closing = true;
      res.shouldKeepAlive = false;
    }
    res.once('close', () => {
      st.inFlight--;
      if (st.newest === res) st.newest = undefined;
      if (d.destroyed) return;
      // Draining and the closing response's headers were out before it: Node keeps the tunnel, we end it.
      if (st.closing) {
        if (st.inFlight === 0) this.endSoon(d);
        return;
      }
      if (st.inFlight === 0) this.arm(d, st, this.limits.idleTimeoutMs);
    });
    this.handler(st.ctx, req, res);
  }

  private onH1Upgrade(req: IncomingMessage, d: Duplex, head: Buffer): void {
    const st = this.h1State.get(d);
    if (!st) return void d.destroy();
    clearTimeout(st.timer); // headers are in; an upgraded tunnel lives as long as its two sides
    if (st.closing) return; // after the closing response, as in onH1Request
    st.upgraded = true;
    this.h1Open.delete(d);
    if (String(req.headers.upgrade ?? '').trim().toLowerCase() === 'h2c') return this.h2cAsHttp1(st, req, d, head);
    if (!this.onUpgrade) return this.refuse(d);
    this.onUpgrade(st.ctx, req, d, head);
  }

  /**
   * Envoy ignores an HTTP/1.1 upgrade to h2c (it removes Upgrade and HTTP2-Settings) and serves the
   * request as HTTP/1.1: so does the waypoint, answering on this tunnel and then closing it (Node's
   * parser has let go of it). Only a request without a body: one with a body is refused.
   */
  private h2cAsHttp1(st: H1State, req: IncomingMessage, d: Duplex, head: Buffer): void {
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (hasBody) return this.refuse(d);
    void head; // bytes after the headers belong to a next request, which this closing tunnel does not serve
    delete req.headers.upgrade;
    delete req.headers['http2-settings'];
    if (!req.readableEnded) req.push(null);
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(d as Socket);
    res.once('finish', () => this.endSoon(d));
    res.once('close', () => res.detachSocket(d as Socket));
    this.handler(st.ctx, req, res);
  }

  private refuse(d: Duplex): void {
    d.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    this.endSoon(d);
  }

  /** Ends a tunnel the parser has let go of, and destroys it after a grace (the client need not close its side). */
  private endSoon(d: Duplex): void {
    d.end();
    setTimeout(() => d.destroy(), 1000).unref();
  }

  private onClientError(e: NodeJS.ErrnoException, socket: Duplex): void {
    const st = this.h1State.get(socket);
    const tooLarge = e.code === 'HPE_HEADER_OVERFLOW';
    const status = tooLarge ? 431 : 400;
    if (st && e.code !== 'ECONNRESET') this.onProtocolError({ ctx: st.ctx, status, reason: `${e.code ?? 'parse error'}: ${e.message}` });
    const s = socket as Socket;
    if (s.writable && !(s as unknown as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      s.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      setTimeout(() => s.destroy(), 1000).unref();
    } else s.destroy();
  }

  private onH2Session(s: Http2Session): void {
    if (!this.handing) return void s.destroy();
    this.h2Ctx.set(s, this.handing);
    this.sessions.add(s);
    s.once('close', () => this.sessions.delete(s));
    s.on('error', () => {});
    // An HTTP/2 session with no stream open for the idle time is closed (GOAWAY).
    s.setTimeout(this.limits.idleTimeoutMs, () => s.close());
    // Opened during a drain (its tunnel finished sniffing after it began): GOAWAY after the
    // client's first flight of streams (they were sent before it knew) or, with none, after the
    // headers deadline.
    if (this.draining) {
      const goaway = () => !s.closed && !s.destroyed && s.close();
      const t = setTimeout(goaway, this.limits.headersTimeoutMs).unref();
      s.once('stream', () => {
        clearTimeout(t);
        setImmediate(goaway);
      });
    }
  }
}
