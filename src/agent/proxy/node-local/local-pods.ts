// The pods enrolled on this node, by address: what the node-local fast path looks a destination
// up in. Made before both the pod manager (which registers and removes pods as they enroll and
// leave) and the proxy context (which only reads it), so neither is patched after construction.
import type { ProxyPod } from '../types.ts';

/** Read side, for the proxy paths. */
export interface LocalPodLookup {
  /** The enrolled pod that holds `ip` on this node, if any. */
  get(ip: string): ProxyPod | undefined;
}

export class LocalPods<P extends ProxyPod = ProxyPod> implements LocalPodLookup {
  private readonly byIp = new Map<string, P>();

  get(ip: string): P | undefined {
    return this.byIp.get(ip);
  }

  /** A pod took its addresses (enrolled or re-adopted). */
  add(pod: P): void {
    for (const ip of pod.ips) this.byIp.set(ip, pod);
  }

  /** A pod left: its addresses go, unless another pod holds them now. */
  remove(pod: P): void {
    for (const ip of pod.ips) if (this.byIp.get(ip) === pod) this.byIp.delete(ip);
  }

  ips(): string[] {
    return [...this.byIp.keys()];
  }

  clear(): void {
    this.byIp.clear();
  }
}
