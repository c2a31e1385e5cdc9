// What the inbound side of HBONE promises its callers (the agent, the waypoint), whichever transport
// serves it (node/server.ts on Node's tls and http2, native/server.ts on the native relay): the
// request a caller decides, the decisions it may take, the outcome it is told, and the listener's
// surface. (Split out of src/hbone/server.ts, which now is node/server.ts.)
import type { IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { HboneAdmission } from '../admission.ts';
import type { Authority } from '../authority.ts';
import type { Credentials } from '../settings.ts';

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

/**
 * An upstream for the server to dial itself: `fd` is an unconnected nonblocking TCP socket (the
 * caller's choice: its netns, its mark), handed over with the decision, so the server closes it on
 * every path. The native relay connects it on its own thread, with no JavaScript socket at all.
 */
export interface DialTarget {
  fd: number;
  address: string;
  port: number;
  /** DIAL_TIMEOUT_MS when absent. */
  timeoutMs?: number;
  /**
   * The same answer holds for a CONNECT to the same :authority on the same connection (the same
   * peer identity and address) until the state the decision read changes (grantsChanged, native/
   * addon.ts). A transport that can (the native relay) then dials those itself, with sockets from
   * HboneHandlers.dialSockets, and calls onReused with `context` instead of onConnect; their
   * outcomes are reported as any other's. Ignored by a transport that cannot.
   */
  reuse?: {
    context: unknown;
    /** grantGeneration() when the decision read the state (after grantsChanged for it, if it was new). */
    generation: number;
  };
}

/** Why a dial failed, as the outcome's `reason` reads: `connect ADDR:PORT: ECONNREFUSED`. */
export const dialFailure = (to: { address: string; port: number }, code: string) => `connect ${to.address}:${to.port}: ${code}`;

/**
 * What to do with a CONNECT:
 * - `upstream`: answer 200 and relay the tunnel to this socket (the caller dialled the target);
 * - `dial`: connect the socket given, then answer 200 and relay; if the connect fails (refused,
 *   unreachable, the timeout, the peer resetting the stream meanwhile), answer 503 and report
 *   `reason` as dialFailure() words it (the agent);
 * - `acceptStream`: answer 200 and hand the tunnel's bytes to the callback as a Duplex, to parse
 *   (the waypoint). Ending the Duplex half-closes the tunnel, destroying it resets the tunnel;
 *   the peer's half-close ends its readable side. The outcome is reported once both are done;
 * - otherwise: answer with the status (a final response, the stream closed) and report `reason`.
 */
export type ConnectDecision =
  | { status: 200; upstream: Socket }
  | { status: 200; dial: DialTarget }
  | { status: 200; acceptStream: (stream: Duplex) => void }
  | { status: 400 | 401 | 503; reason: string };

/**
 * One per stream, on every exit path, for the access log and metrics. Bytes are counted as
 * everywhere in src/hbone: `sent` flows from the HBONE client (the peer) toward the destination
 * (the upstream, or the acceptStream handler), `received` flows back.
 */
export interface HboneOutcome {
  /** The stream onConnect saw, to pair the outcome with what the agent decided for it. */
  stream: object;
  peer: SpiffeId;
  peerAddress: string;
  authority?: Authority;
  headers: IncomingHttpHeaders;
  /** The status sent; 0 when the peer left before any response. */
  status: number;
  sent: number;
  received: number;
  durationMs: number;
  /** Why the request was refused (from onConnect, the parser, or a `dial` that failed). */
  reason?: string;
  /** What broke a tunnel that had been established. */
  error?: string;
}

/** A CONNECT answered with a reused decision (DialTarget.reuse), as onReused hears it. */
export interface HboneReusedRequest {
  authority: Authority;
  peer: SpiffeId;
  peerAddress: string;
  /** Identifies the stream: its outcome carries the same object. */
  stream: object;
}

/** What the agent supplies per pod to either server: the decision per stream, and its outcome. */
export interface HboneHandlers {
  onConnect: (req: HboneRequestInfo) => Promise<ConnectDecision>;
  onComplete?: (outcome: HboneOutcome) => void;
  /**
   * A CONNECT answered with a reused `dial` decision: what onConnect would have recorded for it, from
   * the decision's `context` (undefined if the transport no longer holds it: decide the record anew).
   * Both this and dialSockets are needed for a transport to reuse decisions.
   */
  onReused?: (req: HboneReusedRequest, context: unknown) => void;
  /** Up to `n` unconnected sockets of the family, made as onConnect makes a dial's (fewer if it cannot). */
  dialSockets?: (family: 4 | 6, n: number) => number[];
}

/** A listener's settings, whichever transport serves it (the handlers come separately). */
export interface HboneListenerOptions {
  /** Re-read by updateCredentials() when the pod's certificate rotates. */
  credentials: () => Credentials;
  trustDomain: string;
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

/** A pod's HBONE listener as the agent configures it, whichever data path serves it. */
export type PodHboneServerOptions = HboneListenerOptions & HboneHandlers;

/** What the pod manager needs of a pod's HBONE listener, whichever data path serves it. */
export interface PodHboneServer {
  listen(options: { fd: number }): Promise<void>;
  updateCredentials(): void;
  stats(): { sessions: number; streams: number };
  drain(deadlineMs?: number): Promise<void>;
  /** Stop accepting (agent shutdown); open connections are left to the process exit. */
  close(): void;
}
