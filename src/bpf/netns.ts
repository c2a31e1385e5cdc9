// Sockets inside a pod's network namespace. The agent lives in the node netns but must listen on
// 15001/15006/15008 inside each pod (ztunnel's in-pod model); the addon creates the socket on a
// short-lived thread that entered the pod netns, and the fd is then used by Node normally:
//   net.createServer().listen({ fd })                 listeners (bind + listen here first)
//   new net.Socket({ fd }).connect(port, host)        outbound dials from the pod netns
// (Node 20 wraps an unconnected TCP fd and connects it itself; connectFd is there if not.)
import fs from 'node:fs';
import { native, type NativeAddon, type NativeSocketSpec } from './addon.ts';

/** The addon's batch call (native/net.cc); typed here, where its only caller lives. */
const batchAddon = () =>
  native() as NativeAddon & {
    socketsInNetns(netnsFd: number, spec: NativeSocketSpec, count: number): number[];
    dialSocketsInNetns(netnsFd: number, spec: NativeSocketSpec, count: number, cursor: number): { fds: number[]; cursor: number };
  };

/** A network namespace: a path such as /run/netns/NAME or /proc/PID/ns/net, or an open fd. */
export type NetnsRef = string | number;

export type SocketOptions = NativeSocketSpec;

/** Runs fn with an fd for the netns, opening (and closing) it if given a path. */
export function withNetnsFd<T>(netns: NetnsRef, fn: (fd: number) => T): T {
  if (typeof netns === 'number') return fn(netns);
  let fd: number;
  try {
    fd = fs.openSync(netns, 'r');
  } catch (e) {
    throw new Error(`cannot open network namespace ${netns}: ${(e as Error).message}`, { cause: e });
  }
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates a socket in `netns` (null: the agent's own netns) and returns its fd. */
export function socketInNetns(netns: NetnsRef | null, opts: SocketOptions = {}): number {
  if (netns === null) return native().socketInNetns(-1, opts);
  return withNetnsFd(netns, (fd) => native().socketInNetns(fd, opts));
}

/** `count` identical unbound sockets in `netns`, made by one native thread (no bind, no listen). */
export function socketsInNetns(netns: NetnsRef | null, opts: Omit<SocketOptions, 'bind' | 'listen'>, count: number): number[] {
  if (netns === null) return batchAddon().socketsInNetns(-1, opts, count);
  return withNetnsFd(netns, (fd) => batchAddon().socketsInNetns(fd, opts, count));
}

/**
 * `count` dial sockets in `netns`, each SO_REUSEADDR and bound to its own source port, taken round
 * the netns's ephemeral range from `cursor` (native/net.cc BindDialPort says why: TIME_WAIT).
 * Returns the sockets and the cursor for the next batch.
 */
export function dialSocketsInNetns(netns: NetnsRef | null, opts: Omit<SocketOptions, 'bind' | 'listen' | 'udp'>, count: number, cursor: number): { fds: number[]; cursor: number } {
  if (netns === null) return batchAddon().dialSocketsInNetns(-1, opts, count, cursor);
  return withNetnsFd(netns, (fd) => batchAddon().dialSocketsInNetns(fd, opts, count, cursor));
}

/**
 * Unconnected sockets made ahead of time in one netns, for dials (`new net.Socket({ fd })`):
 * making a socket in another netns needs a thread that enters it, and a thread per dial was the
 * largest fixed cost of a new proxied connection. Refilled in batches (one thread per batch) that
 * grow from 4 to `maxBatch` while the netns keeps dialling (a thread per 32 dials was still a
 * visible share of a new connection), so a pod that never dials much holds a few fds only.
 * The owner closes the pool with the netns fd it was made from.
 */
export class NetnsSocketPool {
  private readonly free: Record<4 | 6, number[]> = { 4: [], 6: [] };
  private readonly batch: Record<4 | 6, number> = { 4: 0, 6: 0 };
  private closed = false;
  /** With sourcePorts: where in the ephemeral range the next batch's ports start. */
  private cursor = 0;

  /**
   * sourcePorts: each socket comes bound to its own source port (dialSocketsInNetns), for dials
   * that would otherwise run the netns out of ports in TIME_WAIT.
   */
  constructor(
    private readonly netnsFd: number,
    private readonly opts: Omit<SocketOptions, 'bind' | 'listen' | 'family'> & { sourcePorts?: boolean } = {},
    private readonly maxBatch = 128,
    private readonly minBatch = 4,
  ) {}

  /** An fd of a fresh socket of `family`; the caller owns it (hand it to net.Socket or close it). */
  take(family: 4 | 6): number {
    if (this.closed) throw new Error('socket pool is closed');
    const free = this.free[family];
    if (free.length === 0) {
      this.batch[family] = Math.min(this.maxBatch, Math.max(this.minBatch, this.batch[family] * 2));
      const { sourcePorts, ...opts } = this.opts;
      let fds: number[];
      if (sourcePorts) {
        ({ fds, cursor: this.cursor } = dialSocketsInNetns(this.netnsFd, { ...opts, family }, this.batch[family], this.cursor));
      } else {
        fds = socketsInNetns(this.netnsFd, { ...opts, family }, this.batch[family]);
      }
      free.push(...fds.reverse());
    }
    return free.pop()!;
  }

  /** Sockets made and not yet taken. */
  get size(): number {
    return this.free[4].length + this.free[6].length;
  }

  close(): void {
    this.closed = true;
    for (const f of [4, 6] as const) {
      for (const fd of this.free[f].splice(0)) fs.closeSync(fd);
      this.batch[f] = 0;
    }
  }
}

/** A listening TCP socket in `netns`, ready for net.createServer().listen({ fd }). */
export function listenerInNetns(
  netns: NetnsRef | null,
  address: string,
  port: number,
  opts: Omit<SocketOptions, 'bind' | 'listen' | 'udp'> & { backlog?: number } = {},
): number {
  const { backlog = 511, ...rest } = opts;
  const family = opts.family ?? (address.includes(':') ? 6 : 4);
  return socketInNetns(netns, { reuseAddr: true, ...rest, family, bind: { address, port }, listen: backlog });
}

/** The netns cookie of a socket's namespace (what bpf_get_netns_cookie() returns in BPF). */
export function socketNetnsCookie(fd: number): bigint {
  return native().socketNetnsCookie(fd);
}

/** The cookie of a network namespace, read from a throwaway socket created in it. */
export function netnsCookie(netns: NetnsRef): bigint {
  const fd = socketInNetns(netns, { family: 4 });
  try {
    return socketNetnsCookie(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** getsockname / getpeername of an fd. */
export function sockName(fd: number, peer = false): { family: 4 | 6; address: string; port: number } {
  return native().sockName(fd, peer);
}

/** Non-blocking connect of an fd; true if connected at once, false if in progress. */
export function connectFd(fd: number, address: string, port: number): boolean {
  return native().connectFd(fd, address, port);
}

/**
 * The pre-NAT destination (SO_ORIGINAL_DST) of a connection accepted after an iptables REDIRECT;
 * undefined if conntrack has no entry (a tracked, un-NATed connection reports its own local
 * address). Only for the iptables capture baseline: eBPF capture
 * recovers destinations with NodeCapture.originalDst.
 */
export function originalDstSockopt(fd: number): { family: 4 | 6; address: string; port: number } | undefined {
  return native().originalDstSockopt(fd) ?? undefined;
}
