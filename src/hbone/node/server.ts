// The inbound HBONE listener of one enrolled pod on Node's tls and http2 (moved from
// src/hbone/server.ts; its contract is server/contract.ts): mutual TLS 1.3 presenting the pod's
// workload certificate, then HTTP/2 CONNECT streams, each handed to the front (server/front.ts) to be
// decided by the agent (onConnect) and relayed to the upstream socket it returns, or handed over.
//
// TLS and HTTP/2 are two servers on purpose: the TLS server finishes the handshake and checks the
// peer's SPIFFE identity first, and only an accepted socket is handed to the HTTP/2 server. So a peer
// from another trust domain never receives our SETTINGS, let alone a stream.
import http2, { constants, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, ListenOptions, Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { HboneAdmission, sourceIp, type AdmissionTicket } from '../admission.ts';
import { certificateIdentity } from './identity.ts';
import type { ConnectDecision, HboneListenerOptions, HboneOutcome, HboneRequestInfo, PodHboneServer } from '../server/contract.ts';
import { atDeadline, drainDeadline } from '../server/drain.ts';
import { HboneFront, type FrontPeer } from '../server/front.ts';
import { remoteOf } from '../server/remote.ts';
import {
  ALPN, CONNECTION_WINDOW, H2_SETTINGS, MAX_HEADER_LIST_PAIRS, MAX_HEADER_LIST_SIZE,
  MAX_SESSION_MEMORY_MB, PING_INTERVAL_MS, PING_TIMEOUT_MS, SERVER_MAX_STREAMS, secureContextOptions,
} from '../settings.ts';
import { NodeFrontStream } from './front-stream.ts';
import { keepAlive } from './keepalive.ts';
import { destroyWhenStalled } from './stalled.ts';

export type {
  ConnectDecision, HboneHandlers, HboneListenerOptions, HboneOutcome, HboneRequestInfo, PodHboneServer, PodHboneServerOptions,
} from '../server/contract.ts';

/** A request on this server: `stream` is the HTTP/2 stream itself. */
export interface HboneRequest extends HboneRequestInfo {
  stream: ServerHttp2Stream;
}

export interface HboneServerOptions extends HboneListenerOptions {
  onConnect: (req: HboneRequest) => Promise<ConnectDecision>;
  onComplete?: (outcome: HboneOutcome) => void;
}

export class HboneServer implements PodHboneServer {
  readonly tls: tls.Server;
  private readonly h2: http2.Http2Server;
  private readonly peers = new WeakMap<Http2Session, FrontPeer>();
  /** Set only while a socket is being handed to the HTTP/2 server: its 'session' event is synchronous. */
  private handing?: FrontPeer;
  private handingSocket?: TLSSocket;
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Set<Http2Session>();
  private streams = 0;
  private draining = false;
  private readonly admission: HboneAdmission;
  /** Admitted connections by their peer `ip:port`, which the raw and the TLS socket share. */
  private readonly tickets = new Map<string, AdmissionTicket>();
  private readonly front: HboneFront;

  constructor(private readonly opts: HboneServerOptions) {
    this.admission = opts.admission ?? new HboneAdmission();
    // The request's `stream` is the ServerHttp2Stream (NodeFrontStream's token).
    this.front = new HboneFront({ onConnect: (req) => opts.onConnect(req as HboneRequest), onComplete: opts.onComplete }, this.admission);
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
    this.h2.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.onStream(stream, headers));
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

  /**
   * Stop accepting and drain every session (drainSession; one still in its TLS handshake is drained
   * once open), so open streams can finish; destroy what is left at the deadline (server/drain.ts:
   * Infinity for none). Resolves once the last connection has closed.
   */
  drain(deadlineMs?: number): Promise<void> {
    let ms: number;
    try {
      ms = drainDeadline(deadlineMs);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.tls.close(() => resolve()));
    for (const s of this.sessions) drainSession(s);
    const deadline = atDeadline(ms, () => {
      for (const s of this.sessions) s.destroy();
      for (const s of this.sockets) s.destroy();
    });
    // A session's 'close' may come a tick after its socket's, which is what the server's close waits for.
    // (Those still in the set have not emitted it: 'close' takes them out.)
    const sessions = closed.then(() => Promise.all([...this.sessions].map((s) => new Promise((r) => s.once('close', r)))));
    return sessions.then(() => undefined).finally(() => clearTimeout(deadline));
  }

  private contextOptions() {
    return secureContextOptions(this.opts.credentials());
  }

  private onSecureConnection(s: TLSSocket): void {
    const peerAddress = remoteOf(s);
    const peer = s.authorized && s.alpnProtocol === 'h2' ? certificateIdentity(s.getPeerCertificate()) : undefined;
    // A handshake that finishes during a drain is served like the others, and drained (onSession).
    const reason = s.alpnProtocol !== 'h2' ? `ALPN ${s.alpnProtocol || 'none'} is not h2`
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
    if (this.draining) drainSession(session);
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => {}); // reported through the outcome (or, below, of no interest)
    // 'stream' comes a tick after the HEADERS were read; a connection error later in the same read
    // has destroyed the stream (and its session link) by then. Nothing to answer or count.
    const rec = stream.session && this.peers.get(stream.session);
    if (!rec) return void stream.destroy();
    this.streams++;
    stream.once('close', () => this.streams--);
    void this.front.serve(rec, new NodeFrontStream(stream, headers));
  }
}

/** How long a drain waits for the ACK of the PING sent after its first GOAWAY. */
const NOTICE_WAIT_MS = 1000;

/**
 * Two GOAWAYs, as the native relay sends them (RFC 9113 §6.8), as far as Node's http2 allows. Node
 * has no shutdown notice (nghttp2_submit_shutdown_notice): its goaway() is a full GOAWAY, after which
 * nghttp2 ignores new streams, so streams the peer sent meanwhile are not served here but left to the
 * second GOAWAY, which names the last stream processed and so refuses them: the client retries them
 * elsewhere (client/pool.ts). What the first GOAWAY and the PING round trip still buy: by the time the
 * session closes, the peer has stopped opening streams, so none of its HEADERS can meet a closed
 * socket (a reset that could hide the final GOAWAY from it). On a session with no stream open Node
 * stops reading after a GOAWAY, so the PING's ACK goes unread and the wait is NOTICE_WAIT_MS.
 */
function drainSession(s: Http2Session): void {
  if (s.closed || s.destroyed) return;
  s.goaway(constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
  const close = () => {
    clearTimeout(timer);
    if (!s.closed && !s.destroyed) s.close(); // GOAWAY with the last stream processed; ends with the last stream
  };
  const timer = setTimeout(close, NOTICE_WAIT_MS);
  if (!s.ping(close)) close(); // too many PINGs outstanding: no round trip to wait for
}

export function createHboneServer(opts: HboneServerOptions): HboneServer {
  return new HboneServer(opts);
}
