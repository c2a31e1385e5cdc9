// Typed access to build/Release/weft_relay.node, the HBONE data path in C++ (native/relay): TLS,
// HTTP/2 framing and the relay of every byte run on the addon's own thread, off the JavaScript heap
// and thread. Calls hand work over and return at once; sessions and streams are numbers, and what
// happens to them arrives through one dispatcher, routed here to the handler of the session.
import { createRequire } from 'node:module';
import path from 'node:path';
import { nativeBuildDir } from '../../util/paths.ts';
import { CONNECTION_WINDOW, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE, SERVER_MAX_STREAMS, STREAM_WINDOW, TLS_CIPHERS } from '../settings.ts';

/** A session's numbers. All required: the relay has no defaults of its own (settings.ts is the one source) and throws without them. */
export interface RelaySettings {
  streamWindow: number;
  connectionWindow: number;
  maxFrameSize: number;
  maxStreams: number;
  maxHeaderListSize: number;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  connectTimeoutMs: number;
}

interface RelayAddon {
  /** tls.ciphers: the TLS 1.3 cipher suites of every context made from then on. */
  init(dispatch: (type: string, session: number, stream: number, n1: number, n2: number, n3: number, text: string, list: string[]) => void, tls: { ciphers: string }): void;
  context(key: string, certChain: string, root: string, server: boolean): number;
  freeContext(ctx: number): void;
  /** Duplicates fd; the session runs the TLS handshake on the relay thread. */
  client(fd: number, ctx: number, serverIdentity: string, settings: RelaySettings): number;
  /** expressPod: the pod whose supply this session's grants dial with (0 or absent: no grants). */
  serve(fd: number, ctx: number, trustDomain: string, settings: RelaySettings, expressPod?: number): number;
  /**
   * A CONNECT stream's number. A session that takes no more streams answers `done` with REFUSED_STREAM.
   * fd (duplicated), the app's socket: attached by the relay itself when the 200 arrives, never read
   * before; on any other outcome only the duplicate is closed (before `done` or `response`).
   */
  request(session: number, headers: string[], fd?: number): number;
  /** Answers a server stream; with 200, fd (duplicated) is the upstream to relay to. */
  respond(session: number, stream: number, status: number, fd: number): void;
  /**
   * Connects fd (an unconnected socket, taken over: closed on every path, a throw too) to
   * address:port on the relay thread, then answers 200 and relays as respond() does, or answers 503
   * with `done`'s error `connect ADDR:PORT: ECODE` (ETIMEDOUT after timeoutMs; ECONNABORTED, status 0,
   * when the stream or session ends first).
   */
  respondDial(session: number, stream: number, fd: number, address: string, port: number, timeoutMs: number): void;
  /** Starts relaying a client stream that got 200 to fd (duplicated); reset if the stream is gone. */
  attach(session: number, stream: number, fd: number): void;
  cancel(session: number, stream: number): void;
  /** A plaintext relay between two sockets (duplicated): `done` then `close` under the number it returns. */
  pipe(a: number, b: number): number;
  close(session: number, graceful: boolean): void;
  stats(): { sessions: number; streams: number; contexts: number; expressFds: number };
  /** Polls a duplicate of a listening socket on the relay thread, accepting at most `batch` per wake-up: `accept` per connection. */
  listen(fd: number, batch: number): number;
  /** Stops polling and closes the duplicate (fd stays open); `unlisten` follows the listener's last `accept`. */
  unlisten(listener: number): void;
  /** Closes an accepted fd with a reset (SO_LINGER 0). */
  resetFd(fd: number): void;
  /**
   * A pod's supply for reused decisions (native/relay/express.h): dials at most maxDials at once per
   * session, each within timeoutMs; `xlow` when fewer than `low` sockets of a family are left.
   */
  expressPod(maxDials: number, timeoutMs: number, low: number): number;
  /** Unconnected TCP sockets for the pod's reused dials: the relay's from this call on. */
  expressSupply(pod: number, family: 4 | 6, fds: number[]): void;
  /** Closes the pod's sockets; its grants match nothing from then on. */
  expressRelease(pod: number): void;
  /** Grants of any other generation no longer match. */
  expressGeneration(generation: number): void;
  /** A later CONNECT to `authority` (raw, byte for byte) on the server session is dialled to address:port by the relay. */
  grant(session: number, authority: string, generation: number, tag: number, address: string, port: number): void;
  /** The capture's original-destination map (duplicated; -1 forgets it): what express listeners look connections up in. */
  outboundMap(fd: number): void;
  /** Connections accepted on `listener` come from the netns with this cookie and may be opened on its grants (outGrant). */
  outboundExpress(listener: number, netnsCookie: bigint): void;
  /**
   * A later connection on `listener` to address:port is opened by the relay as a CONNECT on client
   * `session` (while it has fewer than maxStreams streams) with `authority`, `forwarded` =
   * prefix + the app's source port + suffix, `headers` (name/value flat) and a new traceparent:
   * the listener's `xout`, then the session's `response` and `done`.
   */
  outGrant(listener: number, address: string, port: number, generation: number, tag: number, session: number, maxStreams: number,
    authority: string, forwardedPrefix: string, forwardedSuffix: string, headers: string[]): void;
}

/** A connection the relay opened on an outbound grant (outGrant): the stream `handle` of client `session`. */
export interface ExpressOut {
  handle: number;
  tag: number;
  session: number;
  /** The app's end, as accept() gives it. */
  address: string;
  port: number;
  /** Where the app connected to. */
  orig: { address: string; port: number };
}

/** What a native listener hears (listener.ts): each accepted fd (now the caller's) with its peer; an accept error (it pauses); its end. */
export interface ListenerEvents {
  /** orig: the original destination, when the relay already took it from the capture's map (an express listener). */
  accept(fd: number, address: string, port: number, batchIndex: number, orig?: { address: string; port: number }): void;
  /** An express listener's connection the relay opened itself. */
  express?(x: ExpressOut): void;
  error(code: string): void;
  unlisten(): void;
}

/** What a session hears. `done` comes once per stream, `close` once per session, after its streams' `done`. */
export interface SessionEvents {
  /** Client: the server's SETTINGS arrived. Server: the handshake passed; the peer's SPIFFE URI. */
  ready?(peer: string): void;
  goaway?(code: number): void;
  /**
   * Server: a request's headers, flat name/value pairs (the peer is the one `ready` named), and the
   * session's dials (respondDial) as the relay counted them when it read the request: connecting
   * then, and received in all.
   */
  stream?(id: number, headers: string[], dials: { connecting: number; received: number }): void;
  /** Server: a CONNECT the relay dialled on a grant (`tag`), without asking; `done` follows as for any stream. */
  reused?(id: number, tag: number, authority: string): void;
  /** Client: the CONNECT response. */
  response?(id: number, status: number): void;
  /**
   * Bytes read from the plaintext socket and written to it; the status sent or received (0: none);
   * why it broke; the RST code; for a stream the relay opened on an outbound grant and the peer
   * refused unprocessed, the app's socket, now the handler's.
   */
  done?(id: number, read: number, written: number, status: number, error: string, rstCode: number, handedBack?: number): void;
  close(kind: string, reason: string): void;
}

/** The relay's HTTP/2 and keepalive settings: the same numbers as Node's HBONE (settings.ts). */
export const relaySettings = (p: { pingIntervalMs: number; pingTimeoutMs: number; timeoutMs: number }): RelaySettings => ({
  streamWindow: STREAM_WINDOW,
  connectionWindow: CONNECTION_WINDOW,
  maxFrameSize: MAX_FRAME_SIZE,
  maxStreams: SERVER_MAX_STREAMS,
  maxHeaderListSize: MAX_HEADER_LIST_SIZE,
  pingIntervalMs: p.pingIntervalMs,
  pingTimeoutMs: p.pingTimeoutMs,
  connectTimeoutMs: p.timeoutMs,
});

export const relayAddonPath = path.join(nativeBuildDir, 'weft_relay.node');

let loaded: RelayAddon | undefined;
const handlers = new Map<number, SessionEvents>();
const listeners = new Map<number, ListenerEvents>();
/** Reused-decision pods (expressPod): what to do when one runs low on sockets of a family. */
const expressPods = new Map<number, (family: 4 | 6) => void>();
let grantGen = 0;

/** The generation grants are made under now (grant()). */
export const grantGeneration = (): number => grantGen;

/**
 * The state decisions read has changed: no grant made before applies any more. Cheap when the
 * addon was never loaded (nothing was granted).
 */
export function grantsChanged(): void {
  grantGen++;
  loaded?.expressGeneration(grantGen);
}

/** A pod's supply for reused decisions; `low` runs when the relay asks for more sockets of a family. */
export function openExpressPod(maxDials: number, timeoutMs: number, lowWater: number, low: (family: 4 | 6) => void): number {
  const id = relayAddon().expressPod(maxDials, timeoutMs, lowWater);
  expressPods.set(id, low);
  return id;
}

export function releaseExpressPod(id: number): void {
  if (!expressPods.delete(id)) return;
  relayAddon().expressRelease(id);
}

function listenerEvent(type: string, id: number, fd: number, n1: number, n2: number, n3: number, text: string, list: string[]): void {
  const l = listeners.get(id);
  const orig = list.length >= 2 ? { address: list[0]!, port: Number(list[1]) } : undefined;
  if (type === 'accept') {
    // Nobody to take it (a reloaded module): reset rather than leak the descriptor.
    if (!l) return loaded!.resetFd(fd);
    return l.accept(fd, text, n1, n2, orig);
  }
  // fd is the stream's number here; the relay holds the connection, so a listener gone needs nothing.
  if (type === 'xout') return l?.express?.({ handle: fd, tag: n1, session: n2, address: text, port: n3, orig: orig! });
  if (type === 'listenError') return l?.error(text);
  listeners.delete(id);
  l?.unlisten();
}

function dispatch(type: string, session: number, stream: number, n1: number, n2: number, n3: number, text: string, list: string[]): void {
  // Listener numbers are their own (listener.cc): routed before sessions.
  if (type === 'accept' || type === 'xout' || type === 'listenError' || type === 'unlisten') return listenerEvent(type, session, stream, n1, n2, n3, text, list);
  if (type === 'xlow') return expressPods.get(session)?.(n1 === 6 ? 6 : 4);
  const h = handlers.get(session);
  if (!h) {
    // A socket handed back to nobody (a reloaded module): reset rather than leak it.
    if (type === 'done' && list[1] !== undefined) loaded!.resetFd(Number(list[1]));
    return;
  }
  switch (type) {
    case 'ready': return h.ready?.(text);
    case 'goaway': return h.goaway?.(n1);
    case 'stream': return h.stream?.(stream, list, { connecting: n1, received: n2 });
    case 'response': return h.response?.(stream, n1);
    case 'xopen': return h.reused?.(stream, n1, text);
    case 'done': return h.done?.(stream, n1, n2, n3, text, Number(list[0] ?? 0), list[1] === undefined ? undefined : Number(list[1]));
    case 'close':
      handlers.delete(session);
      return h.close(list[0] ?? 'closed', text);
  }
}

/** The relay addon; throws an actionable error if it has not been built. */
export function relayAddon(): RelayAddon {
  if (!loaded) {
    try {
      loaded = createRequire(import.meta.url)(relayAddonPath) as RelayAddon;
    } catch (e) {
      throw new Error(`weft relay addon not available at ${relayAddonPath}: run make build (${(e as Error).message})`, { cause: e });
    }
    loaded.init(dispatch, { ciphers: TLS_CIPHERS });
    loaded.expressGeneration(grantGen);
  }
  return loaded;
}

/** Opens a session on fd (duplicated: the caller closes its own) and routes its events to `events`. */
export function openRelaySession(kind: 'client' | 'serve', fd: number, ctx: number, identity: string, settings: RelaySettings, events: SessionEvents, expressPod = 0): number {
  const addon = relayAddon();
  const id = kind === 'serve' && expressPod ? addon.serve(fd, ctx, identity, settings, expressPod) : addon[kind](fd, ctx, identity, settings);
  // Events arrive on a later turn of this thread's loop, never inside the call: registering now is in time.
  handlers.set(id, events);
  return id;
}

/** Starts a plaintext relay between two sockets and routes its events to `events`. */
export function openRelayPipe(a: number, b: number, events: SessionEvents): number {
  const id = relayAddon().pipe(a, b);
  handlers.set(id, events);
  return id;
}

/** Accepts on a listening fd (duplicated: it stays the caller's) on the relay thread; events to `events`. */
export function openRelayListener(fd: number, batch: number, events: ListenerEvents): number {
  const id = relayAddon().listen(fd, batch);
  listeners.set(id, events);
  return id;
}

/** The file descriptor under a connected net.Socket (or -1). */
export function socketFd(s: object): number {
  const fd = ((s as { _handle?: { fd?: number } | null })._handle)?.fd;
  return typeof fd === 'number' ? fd : -1;
}
