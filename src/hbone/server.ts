// The inbound HBONE listener of one enrolled pod: mutual TLS 1.3 presenting the pod's workload
// certificate, then HTTP/2 CONNECT streams, each decided by the agent (onConnect) and relayed to the
// upstream socket it returns.
//
// TLS and HTTP/2 are two servers on purpose: the TLS server finishes the handshake and checks the
// peer's SPIFFE identity first, and only an accepted socket is handed to the HTTP/2 server. So a peer
// from another trust domain never receives our SETTINGS, let alone a stream.
import http2, { type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, ListenOptions, Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../api/spiffe.ts';
import { formatAuthority, parseAuthority, type Authority } from './authority.ts';
import { HboneAdmission, sourceIp, type AdmissionTicket } from './admission.ts';
import { certificateIdentity } from './identity.ts';
import { keepAlive } from './keepalive.ts';
import { destroyWhenStalled } from './stalled.ts';
import {
  ALPN, CONNECTION_WINDOW, DRAIN_DEADLINE_MS, H2_SETTINGS, MAX_HEADER_LIST_PAIRS, MAX_HEADER_LIST_SIZE,
  MAX_SESSION_MEMORY_MB, PING_INTERVAL_MS, PING_TIMEOUT_MS, SERVER_MAX_STREAMS, secureContextOptions, type Credentials,
} from './settings.ts';
import { tunnel } from './tunnel.ts';

/** A CONNECT request as the agent decides it, from either server (Node's HTTP/2, or the native relay). */
export interface HboneRequestInfo {
  authority: Authority;
  peer: SpiffeId;
  /** The TCP peer, `ip:port`. */
  peerAddress: string;
  /** All request headers, notably forwarded, baggage and traceparent. */
  headers: IncomingHttpHeaders;
  /** Identifies the stream: its outcome carries the same object. */
  stream: object;
  /** Aborted when the stream ends before the decision (the peer reset it): stop dialling. */
  signal: AbortSignal;
}

export interface HboneRequest extends HboneRequestInfo {
  stream: ServerHttp2Stream;
}

export type ConnectDecision =
  | { status: 200; upstream: Socket }
  | { status: 400 | 401 | 503; reason: string };

/** One per stream, on every exit path, for the access log and metrics. */
export interface HboneOutcome {
  /** The stream onConnect saw, to pair the outcome with what the agent decided for it. */
  stream: object;
  peer: SpiffeId;
  peerAddress: string;
  authority?: Authority;
  headers: IncomingHttpHeaders;
  /** The status sent; 0 when the peer left before any response. */
  status: number;
  /** Bytes from the peer to the upstream, and back. */
  sent: number;
  received: number;
  durationMs: number;
  /** Why the request was refused (from onConnect or the parser). */
  reason?: string;
  /** What broke a tunnel that had been established. */
  error?: string;
}

/** What the agent supplies per pod to either server: the decision per stream, and its outcome. */
export interface HboneHandlers {
  onConnect: (req: HboneRequestInfo) => Promise<ConnectDecision>;
  onComplete?: (outcome: HboneOutcome) => void;
}

export interface HboneServerOptions {
  /** Re-read by updateCredentials() when the pod's certificate rotates. */
  credentials: () => Credentials;
  trustDomain: string;
  onConnect: (req: HboneRequest) => Promise<ConnectDecision>;
  onComplete?: (outcome: HboneOutcome) => void;
  /** A peer that failed the TLS handshake or the identity check. */
  onHandshakeError?: (remote: string, reason: string) => void;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /**
   * Connection and handshake caps and the handshake deadline, shared by every listener of the agent;
   * a server of its own (the defaults) when absent.
   */
  admission?: HboneAdmission;
}

interface Peer {
  peer: SpiffeId;
  peerAddress: string;
  /** Streams of this connection in onConnect (deciding, dialling): capped by maxDialsPerSession. */
  dials: number;
}

/** A pod's HBONE listener as the agent configures it, whichever data path serves it. */
export type PodHboneServerOptions = Omit<HboneServerOptions, 'onConnect' | 'onComplete'> & HboneHandlers;

/** What the pod manager needs of a pod's HBONE listener, whichever data path serves it. */
export interface PodHboneServer {
  listen(options: { fd: number }): Promise<void>;
  updateCredentials(): void;
  stats(): { sessions: number; streams: number };
  drain(deadlineMs?: number): Promise<void>;
  /** Stop accepting (agent shutdown); open connections are left to the process exit. */
  close(): void;
}

export class HboneServer implements PodHboneServer {
  readonly tls: tls.Server;
  private readonly h2: http2.Http2Server;
  private readonly peers = new WeakMap<Http2Session, Peer>();
  /** Set only while a socket is being handed to the HTTP/2 server: its 'session' event is synchronous. */
  private handing?: Peer;
  private handingSocket?: TLSSocket;
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Set<Http2Session>();
  private streams = 0;
  private draining = false;
  private readonly admission: HboneAdmission;
  /** Admitted connections by their peer `ip:port`, which the raw and the TLS socket share. */
  private readonly tickets = new Map<string, AdmissionTicket>();

  constructor(private readonly opts: HboneServerOptions) {
    this.admission = opts.admission ?? new HboneAdmission();
    this.tls = tls.createServer({
      ...this.contextOptions(),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ALPN,
      handshakeTimeout: this.admission.limits.handshakeTimeoutMs,
      noDelay: true,
    });
    this.h2 = http2.createServer({
      // SETTINGS_MAX_HEADER_LIST_SIZE is announced and enforced: a larger header block resets the stream.
      settings: { ...H2_SETTINGS, maxConcurrentStreams: SERVER_MAX_STREAMS, maxHeaderListSize: MAX_HEADER_LIST_SIZE },
      maxHeaderListPairs: MAX_HEADER_LIST_PAIRS,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
    });
    this.tls.on('connection', (s: Socket) => {
      const key = remoteOf(s);
      const ticket = this.admission.admit(sourceIp(key));
      if ('refused' in ticket) {
        this.opts.onHandshakeError?.(key, ticket.refused);
        return void s.destroy();
      }
      this.tickets.set(key, ticket);
      this.sockets.add(s);
      s.once('close', () => {
        this.sockets.delete(s);
        ticket.release();
        if (this.tickets.get(key) === ticket) this.tickets.delete(key);
      });
    });
    this.tls.on('secureConnection', (s: TLSSocket) => this.onSecureConnection(s));
    // With a listener here Node leaves the socket open, even at the handshake timeout: close it.
    this.tls.on('tlsClientError', (e: NodeJS.ErrnoException, s: TLSSocket) => {
      s.destroy();
      this.opts.onHandshakeError?.(remoteOf(s), e.code ?? e.message);
    });
    this.h2.on('session', (session: Http2Session) => this.onSession(session));
    this.h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void this.onStream(stream, headers));
    this.h2.on('sessionError', () => {}); // a session error closes the session; its streams report
  }

  /** Listen on a port, a path, or an fd made inside the pod netns (`{ fd }`). */
  listen(options: ListenOptions | { fd: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.tls.once('error', reject);
      this.tls.listen(options as ListenOptions, () => {
        this.tls.off('error', reject);
        resolve();
      });
    });
  }

  address(): AddressInfo {
    return this.tls.address() as AddressInfo;
  }

  /** New connections present the current credentials; open ones keep the context they started with. */
  updateCredentials(): void {
    this.tls.setSecureContext(this.contextOptions());
  }

  stats(): { sessions: number; streams: number } {
    return { sessions: this.sessions.size, streams: this.streams };
  }

  close(): void {
    this.tls.close();
  }

  /** Stop accepting, GOAWAY every session so open streams can finish, destroy what is left at the deadline. */
  drain(deadlineMs = DRAIN_DEADLINE_MS): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.tls.close(() => resolve()));
    for (const s of this.sessions) s.close();
    const deadline = setTimeout(() => {
      for (const s of this.sessions) s.destroy();
      for (const s of this.sockets) s.destroy();
    }, deadlineMs);
    return closed.finally(() => clearTimeout(deadline));
  }

  private contextOptions() {
    return secureContextOptions(this.opts.credentials());
  }

  private onSecureConnection(s: TLSSocket): void {
    const peerAddress = remoteOf(s);
    const peer = s.authorized && s.alpnProtocol === 'h2' ? certificateIdentity(s.getPeerCertificate()) : undefined;
    const reason = this.draining ? 'draining'
      : s.alpnProtocol !== 'h2' ? `ALPN ${s.alpnProtocol || 'none'} is not h2`
      : !peer ? 'peer certificate has no single SPIFFE identity'
      : peer.trustDomain !== this.opts.trustDomain ? `peer trust domain ${peer.trustDomain} is not ${this.opts.trustDomain}`
      : undefined;
    if (reason || !peer) {
      this.opts.onHandshakeError?.(peerAddress, reason ?? 'rejected');
      s.destroy();
      return;
    }
    this.tickets.get(peerAddress)?.authenticated();
    this.handing = { peer, peerAddress, dials: 0 };
    this.handingSocket = s;
    try {
      this.h2.emit('connection', s);
    } finally {
      this.handing = undefined;
      this.handingSocket = undefined;
    }
  }

  private onSession(session: Http2Session): void {
    if (!this.handing) return void session.destroy();
    this.peers.set(session, this.handing);
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    session.on('error', () => {});
    session.setLocalWindowSize(CONNECTION_WINDOW);
    keepAlive(session, this.opts.pingIntervalMs ?? PING_INTERVAL_MS, this.opts.pingTimeoutMs ?? PING_TIMEOUT_MS);
    if (this.handingSocket) destroyWhenStalled(session, this.handingSocket);
  }

  private async onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', () => {}); // reported through the outcome (or, below, of no interest)
    // 'stream' comes a tick after the HEADERS were read; a connection error later in the same read
    // has destroyed the stream (and its session link) by then. Nothing to answer or count.
    const rec = stream.session && this.peers.get(stream.session);
    if (!rec) return void stream.destroy();
    const { peer, peerAddress } = rec;
    const start = process.hrtime.bigint();
    this.streams++;
    stream.once('close', () => this.streams--);
    const authority = headers[':method'] === 'CONNECT' ? parseAuthority(headers[':authority']) : undefined;
    const report = (o: Partial<HboneOutcome> & { status: number }) =>
      this.opts.onComplete?.({
        stream, peer, peerAddress, authority, headers, sent: 0, received: 0,
        durationMs: Number(process.hrtime.bigint() - start) / 1e6, ...o,
      });

    if (!authority) {
      const reason = headers[':method'] !== 'CONNECT' ? `method ${headers[':method']} is not CONNECT` : `bad authority ${headers[':authority']}`;
      return report({ status: refuse(stream, 400), reason });
    }
    if (rec.dials >= this.admission.limits.maxDialsPerSession) return report({ status: refuse(stream, 503), reason: this.admission.refuseDial(peerAddress) });
    const abort = new AbortController();
    const onClose = () => abort.abort(new Error('peer reset the stream'));
    stream.once('close', onClose);
    rec.dials++;
    let decision: ConnectDecision;
    try {
      decision = await this.opts.onConnect({ authority, peer, peerAddress, headers, stream, signal: abort.signal });
    } catch (e) {
      decision = { status: 503, reason: `connect ${formatAuthority(authority)}: ${(e as Error).message}` };
    } finally {
      rec.dials--;
      stream.off('close', onClose);
    }
    if (decision.status !== 200) return report({ status: refuse(stream, decision.status), reason: decision.reason });

    const upstream = decision.upstream;
    if (stream.destroyed || stream.closed) {
      upstream.destroy();
      return report({ status: 0, error: 'peer reset the stream before the upstream connected' });
    }
    stream.respond({ ':status': 200 });
    const r = await tunnel(stream, upstream);
    report({ status: 200, sent: r.written, received: r.read, error: r.error });
  }
}

export function createHboneServer(opts: HboneServerOptions): HboneServer {
  return new HboneServer(opts);
}

/** Responds with a final status and ends our side; returns the status actually sent (0 if none). */
function refuse(stream: ServerHttp2Stream, status: number): number {
  if (stream.destroyed || stream.closed || stream.headersSent) return 0;
  stream.respond({ ':status': status }, { endStream: true });
  stream.close(); // RST_STREAM(NO_ERROR) once the response is out: a refused stream must not linger
  return status;
}

export function remoteOf(s: Socket): string {
  const ip = (s.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
  return ip ? formatAuthority({ address: ip, port: s.remotePort ?? 0 }) : 'unknown';
}
