// How the agent captures a pod's traffic. Two backends share this shape: eBPF (cgroup hooks and
// sk_lookup scoped to the pod) and in-pod iptables REDIRECT (Istio's way, the benchmark baseline).
import type { Socket } from 'node:net';
import type { PodInfo } from '../../api/enrollment.ts';

export interface Endpoint {
  address: string;
  port: number;
}

/** A connection accepted on 15001: a Node socket, or an fd accepted on the relay thread with its peer. */
export type AcceptedConnection = Socket | { fd: number; remoteAddress: string; remotePort: number };

export interface PodCaptureHandle {
  /** Hands the pod's inbound plaintext listener (15006) of one family to the capture, where it needs it. */
  setInboundListener(fd: number, family: 4 | 6): void;
  /** Where a connection accepted on 15001 was going. undefined: not a captured connection. */
  outboundOriginalDst(sock: AcceptedConnection): Endpoint | undefined;
  /** Where a connection accepted on 15006 was going. */
  inboundOriginalDst(sock: Socket): Endpoint | undefined;
  /**
   * eBPF: the node's original-destination map and the pod's netns cookie, so the relay thread can
   * look the pod's outbound connections up itself (native/relay/express_out.h). Absent: it cannot.
   */
  originalDstSource?(): { mapFd: number; netnsCookie: bigint };
  /** Connections captured so far, by direction. */
  counters(): { outbound: number; inbound: number };
  /** Stops capturing and removes every trace of the pod (links, map entries, rules, pins). */
  release(): Promise<void>;
  /** Closes the agent's handles only; capture stays in place (agent restart). */
  close(): void;
}

export interface CaptureBackend {
  readonly mode: 'ebpf' | 'iptables';
  /**
   * Where the inbound plaintext listener of each family binds: eBPF hands it connections whatever
   * their address, so it stays on loopback (unreachable from outside); REDIRECT needs the pod's
   * own addresses.
   */
  readonly inboundBindAddress: Record<4 | 6, string>;
  /** Captures a pod; adopts what an earlier agent process left in place. */
  enroll(pod: PodInfo): Promise<PodCaptureHandle>;
  /** Removes capture left behind for pods that are no longer enrolled (by uid). */
  forgetExcept(uids: Set<string>): Promise<void>;
  close(): void;
}

/** The capture modes an agent offers, and the one pods get unless they ask. */
export interface CaptureBackends {
  default: 'ebpf' | 'iptables';
  ebpf?: CaptureBackend;
  iptables?: CaptureBackend;
}
