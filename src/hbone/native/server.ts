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
import { parseAuthority, type Authority } from '../authority.ts';
import type { DialTarget, PodHboneServer, PodHboneServerOptions } from '../server/contract.ts';
import { HboneFront, type FrontPeer } from '../server/front.ts';
import { remoteOf } from '../server/remote.ts';
import { atDeadline, drainDeadline } from '../server/drain.ts';
import { DIAL_TIMEOUT_MS, PING_INTERVAL_MS, PING_TIMEOUT_MS } from '../settings.ts';
import { openExpressPod, openRelaySession, relayAddon, relaySettings, releaseExpressPod, socketFd } from './addon.ts';
import { serverContexts } from './contexts.ts';
import { dialEnd, NativeFrontStream, type RelayDone } from './front-stream.ts';

/**
 * Reused decisions: sockets handed to the relay per request for more, and the level under which it
 * asks. A pod that never reuses a decision holds none.
 */
export const REUSE_BATCH = 32;
export const REUSE_LOW = 8;
/** Destinations a session may have grants for: the relay's kMaxGrantsPerSession. */
const MAX_GRANTS_PER_SESSION = 256;
/** Grants remembered per :authority of a session: the current one, and the one an `xopen` still on its way may name. */
const GRANTS_KEPT = 2;

/**
 * A session's peer; `authenticated` once the handshake named a single SPIFFE identity; `dialsSent`,
 * the respondDial commands sent for it (so `connecting` counts those the relay had not yet seen).
 */
interface Peer extends FrontPeer {
  authenticated: boolean;
  dialsSent: number;
  /** Tags of the grants made on this session, by raw :authority, oldest first. */
  grants: Map<string, number[]>;
}

/** A decision granted to the relay: what onReused gets back for each CONNECT dialled on it. */
interface Grant {
  context: unknown;
  authority: Authority;
}

/** The one thing a stream's record needs from the relay: its `done`. */
interface StreamRecord {
  done(d: RelayDone): void;
}

const NOBODY = { trustDomain: '', namespace: '', serviceAccount: '' };

let serverSeq = 0;

export class NativeHboneServer implements PodHboneServer {
  private readonly server: Server;
  private readonly owner = `hbone-server-${++serverSeq}`;
  private ctx: number;
  private readonly sessions = new Map<number, Peer>();
  private readonly streams = new Map<string, StreamRecord>();
  /** This pod's supply for reused decisions (0: the handlers do not reuse), and the grants made. */
  private xpod = 0;
  private readonly grants = new Map<number, Grant>();
  private nextTag = 0;
  /** Families the relay has been given sockets of: the first grant of one supplies it, so the next CONNECT can be dialled. */
  private readonly supplied = new Set<4 | 6>();
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
    if (opts.onReused && opts.dialSockets)
      this.xpod = openExpressPod(this.admission.limits.maxDialsPerSession, DIAL_TIMEOUT_MS, REUSE_LOW, (family) => this.supply(family));
  }

  /** The relay's sockets for reused dials ran low: a batch more, while this server serves. */
  private supply(family: 4 | 6): void {
    if (this.draining || !this.xpod) return;
    this.supplied.add(family);
    // Sent even when none could be made (EMFILE, say): the relay then asks again at its next miss.
    relayAddon().expressSupply(this.xpod, family, this.opts.dialSockets?.(family, REUSE_BATCH) ?? []);
  }

  /** Stops reusing decisions: the relay closes the sockets it holds for this pod. */
  private stopReuse(): void {
    if (this.xpod) releaseExpressPod(this.xpod);
    this.xpod = 0;
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
    this.stopReuse();
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
    this.stopReuse(); // every CONNECT from here on is decided in JavaScript, as a drain requires
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
    const rec: Peer = { peer: NOBODY, peerAddress, dials: 0, connecting: 0, authenticated: false, dialsSent: 0, grants: new Map() };
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
        reused: (stream, tag, authority) => this.onReused(id, stream, rec, tag, authority),
        done: (stream, read, written, status, error) => this.streams.get(`${id}/${stream}`)?.done({ read, written, status, error }),
        close: (kind, reason) => {
          ticket.release();
          this.sessions.delete(id);
          for (const tags of rec.grants.values()) for (const t of tags) this.grants.delete(t);
          if (this.sessions.size === 0) this.drained?.();
          if (!rec.authenticated) this.opts.onHandshakeError?.(peerAddress, kind === 'timeout' ? 'handshake timeout' : reason);
        },
      }, this.xpod);
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
    const s = new NativeFrontStream(session, stream, headers, (target) => {
      rec.dialsSent++;
      const raw = headers[':authority'];
      if (target.reuse && this.xpod && typeof raw === 'string') this.grant(session, rec, raw, target.reuse.generation, target);
    });
    this.streams.set(key, s);
    // Counted until its outcome is out, which waits for the relay's `done`.
    void this.front.serve(rec, s).finally(() => this.streams.delete(key));
  }

  private grant(session: number, rec: Peer, raw: string, generation: number, target: DialTarget): void {
    const authority = parseAuthority(raw);
    // As many destinations per session as the relay keeps (express.h): the rest are decided each time.
    if (!authority || (!rec.grants.has(raw) && rec.grants.size >= MAX_GRANTS_PER_SESSION)) return;
    const tag = ++this.nextTag;
    this.grants.set(tag, { context: target.reuse!.context, authority });
    const tags = rec.grants.get(raw) ?? [];
    tags.push(tag);
    while (tags.length > GRANTS_KEPT) this.grants.delete(tags.shift()!);
    rec.grants.set(raw, tags);
    relayAddon().grant(session, raw, generation, tag, target.address, target.port);
    const family = target.address.includes(':') ? 6 : 4;
    if (!this.supplied.has(family)) this.supply(family);
  }

  /** A CONNECT the relay dialled on a grant: its record opens now, its outcome comes with `done`. */
  private onReused(session: number, stream: number, rec: Peer, tag: number, raw: string): void {
    const grant = this.grants.get(tag);
    const authority = grant?.authority ?? parseAuthority(raw);
    const key = `${session}/${stream}`;
    const token = {};
    const start = process.hrtime.bigint();
    const { peer, peerAddress } = rec;
    this.streams.set(key, {
      done: (d) => {
        this.streams.delete(key);
        // As the front reports a dial (server/front.ts): relayed, or the reason it was not.
        const end = dialEnd(d, authority ?? { address: '', port: 0 });
        this.opts.onComplete?.({ stream: token, peer, peerAddress, authority, headers: {}, durationMs: Number(process.hrtime.bigint() - start) / 1e6, ...end });
      },
    });
    if (authority) this.opts.onReused?.({ authority, peer, peerAddress, stream: token }, grant?.context);
  }
}
