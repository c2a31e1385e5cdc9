import { isIP } from 'node:net';

// Which pods the mesh captures: Istio's ambient labels. A namespace (or the pod itself) labelled
// istio.io/dataplane-mode=ambient enrolls; the pod label istio.io/dataplane-mode=none opts out.
export const DATAPLANE_MODE = 'istio.io/dataplane-mode';

export function shouldEnroll(namespaceLabels: Record<string, string> | undefined, podLabels: Record<string, string> | undefined): boolean {
  const pod = podLabels?.[DATAPLANE_MODE];
  if (pod === 'none') return false;
  if (pod === 'ambient') return true;
  return namespaceLabels?.[DATAPLANE_MODE] === 'ambient';
}

/** What the enroller (the lab, or a CNI plugin) tells the agent about a pod. */
export interface PodInfo {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ips: string[];
  /** Path of the pod's network namespace, e.g. /run/netns/NAME or /proc/PID/ns/net. */
  netns: string;
  /** The pod's cgroup v2 directory. */
  cgroup: string;
  /** Capture mode for this pod, if not the agent's default (annotation weft.dev/capture). */
  capture?: 'ebpf' | 'iptables';
  /**
   * Set by the agent, never taken from a request: when netns is /proc/<pid>/ns/net, that
   * process's start time, so a restarted agent does not re-adopt a reused PID (proc.ts).
   */
  pidStartTime?: string;
}

export function validatePodInfo(v: unknown): PodInfo {
  const o = v as Partial<PodInfo> | null;
  const str = (k: keyof PodInfo) => {
    if (typeof o?.[k] !== 'string' || !(o[k] as string)) throw new Error(`enrollment request: field "${k}" is required`);
    return o[k] as string;
  };
  if (!Array.isArray(o?.ips) || o.ips.some((ip) => typeof ip !== 'string')) throw new Error('enrollment request: field "ips" must be a list of addresses');
  // The agent keys its node-local fast path and its listeners by these: only plain addresses.
  for (const ip of o.ips as string[]) if (isIP(ip) === 0 || ip.includes('%')) throw new Error(`enrollment request: field "ips": ${JSON.stringify(ip.slice(0, 64))} is not an IPv4 or IPv6 address`);
  if (new Set(o.ips).size !== o.ips.length) throw new Error('enrollment request: field "ips" lists an address twice');
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(str('uid'))) throw new Error('enrollment request: field "uid" has invalid characters');
  if (o.capture !== undefined && o.capture !== 'ebpf' && o.capture !== 'iptables') throw new Error('enrollment request: field "capture" must be ebpf or iptables');
  return { uid: str('uid'), name: str('name'), namespace: str('namespace'), serviceAccount: str('serviceAccount'), ips: o.ips, netns: str('netns'), cgroup: str('cgroup'), ...(o.capture ? { capture: o.capture } : {}) };
}
