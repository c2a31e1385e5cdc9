// What the outbound side of HBONE promises its callers and asks of its sessions, in a file of its own
// so the pool (pool.ts) and the sessions of either transport (node/client.ts, native/client.ts) both
// point at it and never at each other.
import type { Socket } from 'node:net';
import type { Credentials } from '../settings.ts';

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
  /**
   * The app's connection, when the caller has it before connecting: a connected fd no Node socket
   * reads (AcceptedFd.fd). The native relay takes a duplicate with the CONNECT and relays from it as
   * soon as the 200 arrives, saving a round trip to JavaScript; relay() must then be given this same
   * fd, and only closes it. On any other outcome the fd stays the caller's, untouched (the pool may
   * try it on another session). Node's sessions ignore it.
   */
  appFd?: number;
  /**
   * Once the CONNECT is answered 200, grant the same answer to the relay (native sessions only;
   * native/relay/express_out.h): a later connection on `listener` to `orig` is opened on this same
   * session by the relay itself, until the state `generation` passes. Node's sessions ignore it.
   */
  reuse?: OutboundReuse;
}

/** An outbound grant: what the relay needs to open the same CONNECT again by itself. */
export interface OutboundReuse {
  listener: number;
  orig: { address: string; port: number };
  generation: number;
  /** The caller's record of the decision, carried back with each connection opened on it. */
  tag: number;
  /** `forwarded` is prefix + the app's source port + suffix; `headers` (name/value flat) follow it, then a new traceparent. */
  forwardedPrefix: string;
  forwardedSuffix: string;
  headers: string[];
}

/**
 * What a tunnel carried. Byte counters are named the same way everywhere in src/hbone: `sent` flows
 * from the side that opened the connection (the app, the HBONE client) toward its destination,
 * `received` flows back.
 */
export interface TunnelResult {
  sent: number;
  received: number;
  error?: string;
}

/** An established CONNECT tunnel (status 200). */
export interface HboneTunnel {
  status: 200;
  /**
   * Carries the tunnel to and from a TCP socket until both are done; the socket is the tunnel's from
   * then on. A number is a connected socket's fd (one accepted on the relay thread): no Node socket
   * is made for it on the native relay.
   */
  relay(socket: Socket | number): Promise<TunnelResult>;
}

/**
 * A client session as the pool sees it: Node's HTTP/2 (node/client.ts) or the native relay
 * (native/client.ts). request() rejects with StreamRefused when the session took no stream;
 * `released` runs once the stream, started or not, is gone.
 */
export interface PoolSession<T extends HboneTunnel> {
  request(req: HboneConnectRequest, timeoutMs: number, released: () => void): Promise<T>;
  close(): void;
  destroy(): void;
  once(event: 'goaway' | 'close', listener: () => void): unknown;
}

/** What opening a session needs: where and how to dial, whose credentials, whom to expect. */
export interface SessionParams {
  dial: () => Promise<Socket>;
  credentials: Credentials;
  /** Whose credentials they are (one TLS context per identity in the native relay). */
  srcIdentity?: string;
  dstIdentity: string;
  dstAddress: string;
  port: number;
  timeoutMs: number;
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export type SessionOpener<T extends HboneTunnel> = (p: SessionParams) => Promise<PoolSession<T>>;
