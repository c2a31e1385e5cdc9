// The inbound HBONE listener of one enrolled pod on the native relay: the same contract as
// server.ts (Node's TLS and HTTP/2), with the handshake, the peer identity check, HTTP/2 and the
// relay in C++. Accepted sockets are handed over unread; each CONNECT comes back here to be decided
// (onConnect) and, when allowed, is answered together with the upstream socket to relay to.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http2';
import { parseSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import { HboneAdmission, sourceIp } from '../admission.ts';
import { formatAuthority, parseAuthority, type Authority } from '../authority.ts';
import { remoteOf, type ConnectDecision, type PodHboneServer, type PodHboneServerOptions } from '../server.ts';
import { DRAIN_DEADLINE_MS, PING_INTERVAL_MS, PING_TIMEOUT_MS } from '../settings.ts';
import { openRelaySession, relayAddon, relaySettings, socketFd } from './addon.ts';
import { RelayContexts } from './contexts.ts';

interface PendingStream {
  token: object;
  peer: Peer;
  start: bigint;
  headers: IncomingHttpHeaders;
  authority?: Authority;
  status: number;
  reason?: string;
  /** Decided and answered; the outcome waits for both this and the relay's `done`. */
  answered: boolean;
  /** The relay's account: bytes, and the status it sent (0 when the stream was gone before the answer). */
  done?: { read: number; written: number; status: number; error: string };
  /** Ends onConnect's dial when the stream is gone before the answer. */
  abort: AbortController;
}

interface Peer {
  peer?: SpiffeId;
  peerAddress: string;
  /** Streams of this session in onConnect (deciding, dialling): capped by maxDialsPerSession. */
  dials: number;
}

let serverSeq = 0;

export class NativeHboneServer implements PodHboneServer {
  private readonly server: Server;
  private readonly contexts = new RelayContexts();
  private readonly owner = `hbone-server-${++serverSeq}`;
  private ctx: number;
  private readonly sessions = new Map<number, Peer>();
  private readonly streams = new Map<string, PendingStream>();
  private draining = false;
  private drained?: () => void;
  private readonly admission: HboneAdmission;

  constructor(private readonly opts: PodHboneServerOptions) {
    this.admission = opts.admission ?? new HboneAdmission();
    this.ctx = this.contexts.get(this.owner, opts.credentials(), true);
    this.server = createServer({ pauseOnConnect: true, noDelay: true }, (s) => this.accept(s));
  }

  /** Listen on an fd made inside the pod netns (`{ fd }`), or a port (tests). */
  listen(options: { fd: number } | { port: number; host?: string }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(options, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** New connections present the current credentials; open ones keep the context they started with. */
  updateCredentials(): void {
    this.ctx = this.contexts.get(this.owner, this.opts.credentials(), true);
  }

  stats(): { sessions: number; streams: number } {
    return { sessions: this.sessions.size, streams: this.streams.size };
  }

  close(): void {
    this.server.close();
  }

  /** Stop accepting, GOAWAY every session so open streams can finish, close what is left at the deadline. */
  drain(deadlineMs = DRAIN_DEADLINE_MS): Promise<void> {
    this.draining = true;
    this.server.close();
    for (const id of this.sessions.keys()) relayAddon().close(id, true);
    return new Promise<void>((resolve) => {
      const deadline = setTimeout(() => {
        for (const id of this.sessions.keys()) relayAddon().close(id, false);
      }, deadlineMs);
      // Done when the last session has closed (sessions report `close` after their streams' `done`).
      this.drained = () => {
        this.drained = undefined;
        clearTimeout(deadline);
        this.contexts.close();
        resolve();
      };
      if (this.sessions.size === 0) this.drained();
    });
  }

  private accept(s: Socket): void {
    const peerAddress = remoteOf(s);
    if (this.draining) {
      this.opts.onHandshakeError?.(peerAddress, 'draining');
      return void s.destroy();
    }
    // Over a cap: closed before the relay allocates anything for it.
    const ticket = this.admission.admit(sourceIp(peerAddress));
    if ('refused' in ticket) {
      this.opts.onHandshakeError?.(peerAddress, ticket.refused);
      return void s.destroy();
    }
    const rec: Peer = { peerAddress, dials: 0 };
    let opened = false;
    try {
      const settings = relaySettings({
        pingIntervalMs: this.opts.pingIntervalMs ?? PING_INTERVAL_MS,
        pingTimeoutMs: this.opts.pingTimeoutMs ?? PING_TIMEOUT_MS,
        // The relay closes a session whose handshake is not done by then (its connect timeout).
        timeoutMs: this.admission.limits.handshakeTimeoutMs,
      });
      const id = openRelaySession('serve', socketFd(s), this.ctx, this.opts.trustDomain, settings, {
        ready: (uri) => {
          rec.peer = parseSpiffe(uri);
          if (!rec.peer) {
            this.opts.onHandshakeError?.(peerAddress, 'peer certificate has no single SPIFFE identity');
            relayAddon().close(id, false);
          } else ticket.authenticated();
        },
        stream: (stream, flat) => void this.onStream(id, stream, rec, flat),
        done: (stream, read, written, status, error) => this.onDone(id, stream, { read, written, status, error }),
        close: (kind, reason) => {
          ticket.release();
          this.sessions.delete(id);
          if (this.sessions.size === 0) this.drained?.();
          if (!rec.peer) this.opts.onHandshakeError?.(peerAddress, kind === 'timeout' ? 'handshake timeout' : reason);
        },
      });
      this.sessions.set(id, rec);
      opened = true;
    } catch (e) {
      this.opts.onHandshakeError?.(peerAddress, (e as Error).message);
    } finally {
      if (!opened) ticket.release();
      s.destroy(); // the relay holds its own descriptor of the connection
    }
  }

  private async onStream(session: number, stream: number, rec: Peer, flat: string[]): Promise<void> {
    const headers: IncomingHttpHeaders = {};
    for (let i = 0; i + 1 < flat.length; i += 2) headers[flat[i]!] = flat[i + 1]!;
    const authority = headers[':method'] === 'CONNECT' ? parseAuthority(headers[':authority']) : undefined;
    const key = `${session}/${stream}`;
    const p: PendingStream = { token: {}, peer: rec, start: process.hrtime.bigint(), headers, authority, status: 0, answered: false, abort: new AbortController() };
    this.streams.set(key, p);
    const answer = (status: number, upstream?: Socket) => {
      // Sent unless the peer left meanwhile: `done` then says status 0.
      if (!p.done) relayAddon().respond(session, stream, status, upstream ? socketFd(upstream) : -1);
      upstream?.destroy(); // the relay holds its own descriptor when it took it
      p.status = status;
      p.answered = true;
      this.maybeReport(key);
    };
    if (!authority) {
      p.reason = headers[':method'] !== 'CONNECT' ? `method ${headers[':method']} is not CONNECT` : `bad authority ${headers[':authority']}`;
      return answer(400);
    }
    if (rec.dials >= this.admission.limits.maxDialsPerSession) {
      p.reason = this.admission.refuseDial(rec.peerAddress);
      return answer(503);
    }
    rec.dials++;
    let decision: ConnectDecision;
    try {
      decision = await this.opts.onConnect({ authority, peer: rec.peer!, peerAddress: rec.peerAddress, headers, stream: p.token, signal: p.abort.signal });
    } catch (e) {
      decision = { status: 503, reason: `connect ${formatAuthority(authority)}: ${(e as Error).message}` };
    } finally {
      rec.dials--;
    }
    if (decision.status !== 200) {
      p.reason = decision.reason;
      return answer(decision.status);
    }
    answer(200, decision.upstream);
  }

  private onDone(session: number, stream: number, r: { read: number; written: number; status: number; error: string }): void {
    const key = `${session}/${stream}`;
    const p = this.streams.get(key);
    if (!p) return;
    p.done = r;
    if (!p.answered) p.abort.abort(new Error('peer reset the stream'));
    this.maybeReport(key);
  }

  private maybeReport(key: string): void {
    const p = this.streams.get(key);
    if (!p || !p.answered || !p.done) return;
    this.streams.delete(key);
    const sent = p.done.status;
    this.opts.onComplete?.({
      stream: p.token,
      peer: p.peer.peer ?? { trustDomain: '', namespace: '', serviceAccount: '' },
      peerAddress: p.peer.peerAddress,
      authority: p.authority,
      headers: p.headers,
      status: sent,
      // Bytes from the peer to the upstream, and back.
      sent: p.done.written,
      received: p.done.read,
      durationMs: Number(process.hrtime.bigint() - p.start) / 1e6,
      reason: p.reason,
      error: sent === 0 && p.status === 200 ? 'peer reset the stream before the upstream connected' : p.done.error || undefined,
    });
  }
}
