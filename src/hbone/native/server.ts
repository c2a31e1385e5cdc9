// The inbound HBONE listener of one enrolled pod on the native relay: the same contract
// (server/contract.ts) and the same front (server/front.ts) as node/server.ts (Node's TLS and
// HTTP/2), with the handshake, the peer identity check, HTTP/2 and the relay in C++. Accepted sockets
// are handed over unread; each CONNECT comes back here to the front to be decided (onConnect) and,
// when allowed, is answered together with the upstream socket to relay to (or a socketpair whose
// other end the caller reads as a Duplex).
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http2';
import { parseSpiffe } from '../../api/spiffe.ts';
import { HboneAdmission, sourceIp } from '../admission.ts';
import type { PodHboneServer, PodHboneServerOptions } from '../server/contract.ts';
import { HboneFront, type FrontPeer } from '../server/front.ts';
import { remoteOf } from '../server/remote.ts';
import { atDeadline, drainDeadline } from '../server/drain.ts';
import { PING_INTERVAL_MS, PING_TIMEOUT_MS } from '../settings.ts';
import { openRelaySession, relayAddon, relaySettings, socketFd } from './addon.ts';
import { serverContexts } from './contexts.ts';
import { NativeFrontStream } from './front-stream.ts';

/**
 * A session's peer; `authenticated` once the handshake named a single SPIFFE identity; `dialsSent`,
 * the respondDial commands sent for it (so `connecting` counts those the relay had not yet seen).
 */
interface Peer extends FrontPeer {
  authenticated: boolean;
  dialsSent: number;
}

const NOBODY = { trustDomain: '', namespace: '', serviceAccount: '' };

let serverSeq = 0;

export class NativeHboneServer implements PodHboneServer {
  private readonly server: Server;
  private readonly owner = `hbone-server-${++serverSeq}`;
  private ctx: number;
  private readonly sessions = new Map<number, Peer>();
  private readonly streams = new Map<string, NativeFrontStream>();
  private draining = false;
  private drained?: () => void;
  private readonly admission: HboneAdmission;
  private readonly front: HboneFront;

  constructor(private readonly opts: PodHboneServerOptions) {
    this.admission = opts.admission ?? new HboneAdmission();
    this.front = new HboneFront(opts, this.admission);
    // Shared with every other pod's server presenting the same certificate (contexts.ts).
    this.ctx = serverContexts.get(this.owner, opts.credentials(), true);
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
    if (this.draining) return; // released: no new sessions, none to present them to
    this.ctx = serverContexts.get(this.owner, this.opts.credentials(), true);
  }

  stats(): { sessions: number; streams: number } {
    return { sessions: this.sessions.size, streams: this.streams.size };
  }

  close(): void {
    this.server.close();
    this.draining = true; // a connection still queued is refused, not opened on a released context
    serverContexts.release(this.owner, true); // open sessions hold their own reference
  }

  /**
   * Stop accepting and drain every session (the relay's two GOAWAYs, session.cc: streams the peer
   * sent before it saw the first are still served; a session still in its handshake is drained once
   * open), so open streams can finish; close what is left at the deadline (server/drain.ts: Infinity
   * for none). Resolves once the last session has closed.
   */
  drain(deadlineMs?: number): Promise<void> {
    let ms: number;
    try {
      ms = drainDeadline(deadlineMs);
    } catch (e) {
      return Promise.reject(e as Error);
    }
    this.draining = true;
    this.server.close();
    serverContexts.release(this.owner, true); // open sessions hold their own reference
    for (const id of this.sessions.keys()) relayAddon().close(id, true);
    return new Promise<void>((resolve) => {
      const deadline = atDeadline(ms, () => {
        for (const id of this.sessions.keys()) relayAddon().close(id, false);
      });
      // Done when the last session has closed (sessions report `close` after their streams' `done`).
      this.drained = () => {
        this.drained = undefined;
        clearTimeout(deadline);
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
    const rec: Peer = { peer: NOBODY, peerAddress, dials: 0, connecting: 0, authenticated: false, dialsSent: 0 };
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
          const peer = parseSpiffe(uri);
          if (!peer) {
            this.opts.onHandshakeError?.(peerAddress, 'peer certificate has no single SPIFFE identity');
            return relayAddon().close(id, false);
          }
          Object.assign(rec, { peer, authenticated: true });
          ticket.authenticated();
        },
        stream: (stream, flat, dials) => this.onStream(id, stream, rec, flat, dials),
        done: (stream, read, written, status, error) => this.streams.get(`${id}/${stream}`)?.done({ read, written, status, error }),
        close: (kind, reason) => {
          ticket.release();
          this.sessions.delete(id);
          if (this.sessions.size === 0) this.drained?.();
          if (!rec.authenticated) this.opts.onHandshakeError?.(peerAddress, kind === 'timeout' ? 'handshake timeout' : reason);
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

  private onStream(session: number, stream: number, rec: Peer, flat: string[], dials: { connecting: number; received: number }): void {
    const headers: IncomingHttpHeaders = {};
    for (let i = 0; i + 1 < flat.length; i += 2) headers[flat[i]!] = flat[i + 1]!;
    const key = `${session}/${stream}`;
    // The relay's count when it read this request, plus what was sent since: never under the truth
    // (a connect that ended since is still counted), so the cap holds without an event per connect.
    rec.connecting = dials.connecting + (rec.dialsSent - dials.received);
    const s = new NativeFrontStream(session, stream, headers, () => rec.dialsSent++);
    this.streams.set(key, s);
    // Counted until its outcome is out, which waits for the relay's `done`.
    void this.front.serve(rec, s).finally(() => this.streams.delete(key));
  }
}
