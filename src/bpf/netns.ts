// Sockets inside a pod's network namespace. The agent lives in the node netns but must listen on
// 15001/15006/15008 inside each pod (ztunnel's in-pod model); the addon creates the socket on a
// short-lived thread that entered the pod netns, and the fd is then used by Node normally:
//   net.createServer().listen({ fd })                 listeners (bind + listen here first)
//   new net.Socket({ fd }).connect(port, host)        outbound dials from the pod netns
// (Node 20 wraps an unconnected TCP fd and connects it itself; connectFd is there if not.)
import fs from 'node:fs';
import { native, type NativeSocketSpec } from './addon.ts';

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
