// Sockets the agent opens inside a pod's network namespace (the in-pod model): listeners on the
// capture ports, and upstream dials that leave from the pod's own addresses. Dials carry the agent
// mark so no capture rule in the pod ever takes them back to the agent. Dial sockets come from a
// per-pod pool made ahead of time in the pod netns (NetnsSocketPool): a thread per dial was the
// largest fixed cost of a new connection.
import { closeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { ExpressOut } from '../../hbone/native/addon.ts';
import { NativeListener, type AcceptedFd } from '../../hbone/native/listener.ts';
import { connectFd } from '../../hbone/node/dial.ts';
import { WEFT, listenerInNetns } from '../../bpf/index.ts';
import { NetnsSocketPool } from '../../bpf/netns.ts';
import type { Endpoint } from '../capture/backend.ts';

export const AGENT_MARK = WEFT.AGENT_MARK;

/** Where dial sockets come from: a pool in the pod netns, or anything that hands out fresh fds. */
export interface DialSockets {
  take(family: 4 | 6): number;
}

/**
 * The pod's dial sockets: nonblocking, carrying the agent mark, each bound to its own source port
 * (the agent dials the app at the pod's own address and closes first: a port the kernel picked
 * would not reuse those TIME_WAITs by default; native/net.cc BindDialPort). Close it with the netns fd.
 */
export const podDialSockets = (netnsFd: number) => new NetnsSocketPool(netnsFd, { mark: AGENT_MARK, nonblock: true, sourcePorts: true });


/** The loopback address of each family: the outbound listener (15001) is reachable only from inside the pod. */
export const LOOPBACK = { 4: '127.0.0.1', 6: '::1' } as const;

/**
 * The pod netns has no IPv6 (disabled, or no ::1 yet): the errors binding an IPv6 address gives
 * then. The pod cannot make IPv6 connections either, so IPv4 listeners alone lose nothing.
 */
export const noIpv6 = (e: unknown) => ['EADDRNOTAVAIL', 'EAFNOSUPPORT'].includes((e as { code?: string }).code ?? '');

/**
 * A listening server in the pod netns; the handler gets paused sockets and their fds. An IPv6
 * address gets an IPv6-only socket, so each family has its own listener (as sk_lookup's slots need).
 */
export function listenInPod(netnsFd: number, address: string, port: number, onConn: (s: Socket) => void, inherited?: number): Promise<{ server: Server; fd: number }> {
  // An inherited fd is the same socket the agent before this one listened on (an upgrade).
  const fd = inherited ?? listenerInNetns(netnsFd, address, port, { mark: AGENT_MARK, ...(address.includes(':') ? { v6Only: true } : {}) });
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onConn);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve({ server, fd });
    });
  });
}

/** A pod listener as the pod manager holds it: close() stops accepting and closes its fd. */
export interface PodListener {
  close(): void;
}

/**
 * listenInPod on the native data path: the relay thread accepts (native/relay/listener.cc) and the
 * handler gets fds with their peers, no Node socket. The fd is the same kind of socket either way,
 * so an agent upgrade hands it over whichever data path either agent runs.
 */
export function listenInPodNative(netnsFd: number, address: string, port: number, onConn: (c: AcceptedFd) => void, inherited?: number, onError?: (code: string) => void, onExpress?: (x: ExpressOut) => void): { server: PodListener; fd: number } {
  const fd = inherited ?? listenerInNetns(netnsFd, address, port, { mark: AGENT_MARK, ...(address.includes(':') ? { v6Only: true } : {}) });
  let listener: NativeListener;
  try {
    listener = new NativeListener(fd, onConn, { onError, onExpress });
  } catch (e) {
    if (inherited === undefined) closeSync(fd); // an inherited one is closed by the caller's cleanup
    throw e;
  }
  let open = true;
  return {
    fd,
    server: {
      // Once only (retire and close both close): a second closeSync could hit a reused fd number.
      close: () => {
        if (!open) return;
        open = false;
        // The relay polls its own duplicate, so ours may close at once; what it accepts before it
        // stops still reaches onConn.
        void listener.close();
        closeSync(fd);
      },
    },
  };
}

/**
 * Connects from inside the pod netns; resolves once connected, rejects with the socket error.
 * EADDRNOTAVAIL means the socket's own source port is in a live connection to this destination
 * (podDialSockets): the next socket has the next port.
 */
export async function dialFromPod(sockets: DialSockets, dst: Endpoint, timeoutMs?: number, signal?: AbortSignal): Promise<Socket> {
  const family = dst.address.includes(':') ? 6 : 4;
  for (let tries = 0; ; tries++) {
    const fd = sockets.take(family);
    try {
      return await connectFd(fd, dst, timeoutMs, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRNOTAVAIL' || tries >= 3) throw e;
    }
  }
}
