// The enrollment protocol between whoever starts pods (the CNI plugin on Kubernetes, the lab) and
// the node agent: which pods the mesh captures, what is said about a pod, and the calls on the
// agent's Unix socket. The agent serves it (src/agent/inpod/server.ts); everything else calls it.
import { request } from 'node:http';
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

/** The pod annotation that picks a pod's capture mode when it is not the agent's default. */
export const CAPTURE_ANNOTATION = 'weft.dev/capture';

/** Istio CNI marks pods whose traffic is redirected to the node proxy with this annotation. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

/** A pod as the decision reads it: the fields of a Kubernetes Pod it uses. */
export interface EnrollmentPod {
  metadata: { uid: string; name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { serviceAccountName?: string; hostNetwork?: boolean };
}

/** Where a pod's sandbox is: known to whoever made it (the runtime and the network plugin before weft's). */
export interface PodSandbox {
  /** Path of the network namespace, as PodInfo.netns. */
  netns: string;
  /** The pod's cgroup v2 directory. */
  cgroup: string;
  /** The pod's addresses; may be empty (the network plugin reported none). */
  ips: string[];
}

/**
 * Whether a pod joins the mesh, and why (for logs). When it does, `podInfo` says what to tell the
 * agent once the pod's placement is known (the CNI plugin looks up the cgroup only for pods it enrolls).
 */
export type EnrollmentDecision = { enroll: false; why: string } | { enroll: true; why: string; podInfo: (at: PodSandbox) => PodInfo };

/**
 * The decision the CNI plugin makes on ADD, the lab for each of its pods, and the agent for the
 * running pods it adopts at start: from the pod (labels,
 * annotations, service account, host network) and its namespace's labels. Pure: no I/O.
 */
export function decideEnrollment(pod: EnrollmentPod, namespaceLabels: Record<string, string> | undefined): EnrollmentDecision {
  if (pod.spec?.hostNetwork) return { enroll: false, why: 'host network' };
  if (!shouldEnroll(namespaceLabels, pod.metadata.labels)) return { enroll: false, why: 'not ambient' };
  const capture = pod.metadata.annotations?.[CAPTURE_ANNOTATION];
  return {
    enroll: true,
    why: 'ambient',
    podInfo: (at) => ({
      uid: pod.metadata.uid,
      name: pod.metadata.name,
      namespace: pod.metadata.namespace,
      serviceAccount: pod.spec?.serviceAccountName || 'default',
      ips: at.ips,
      netns: at.netns,
      cgroup: at.cgroup,
      ...(capture === 'ebpf' || capture === 'iptables' ? { capture } : {}),
    }),
  };
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
  /** Capture mode for this pod, if not the agent's default (CAPTURE_ANNOTATION). */
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

/** The agent's enrollment socket, as HTTP paths. */
export const ENROLLMENT_PATHS = {
  pods: '/v1/pods',
  pod: (uid: string) => `/v1/pods/${encodeURIComponent(uid)}`,
  workloads: '/v1/workloads',
  health: '/healthz',
} as const;

/** A pod as the agent lists it (GET /v1/pods). */
export interface EnrolledPod {
  info?: Partial<PodInfo>;
}

/** A workload's status in the agent's view of the mesh (GET /v1/workloads). */
export interface WorkloadStatus {
  namespace: string;
  name: string;
  status: string;
}

export function agentCall<T>(socketPath: string, method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath, method, path, timeout: timeoutMs, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (s += d));
      res.on('end', () => {
        let v: { error?: string } = {};
        try {
          v = JSON.parse(s) as { error?: string };
        } catch {}
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`agent: ${v.error ?? `HTTP ${res.statusCode}`}`));
        else resolve(v as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`agent at ${socketPath} did not answer within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** The calls on an agent's enrollment socket. */
export const enrollPod = (socketPath: string, pod: PodInfo, timeoutMs = 30_000) => agentCall<{ enrolled: boolean }>(socketPath, 'PUT', ENROLLMENT_PATHS.pod(pod.uid), pod, timeoutMs);
export const releasePod = (socketPath: string, uid: string, timeoutMs = 30_000) => agentCall<{ released: boolean }>(socketPath, 'DELETE', ENROLLMENT_PATHS.pod(uid), undefined, timeoutMs);
export const listEnrolledPods = (socketPath: string, timeoutMs = 30_000) => agentCall<{ pods?: EnrolledPod[] }>(socketPath, 'GET', ENROLLMENT_PATHS.pods, undefined, timeoutMs);
export const listWorkloads = (socketPath: string, timeoutMs = 30_000) => agentCall<{ workloads: WorkloadStatus[] }>(socketPath, 'GET', ENROLLMENT_PATHS.workloads, undefined, timeoutMs);
export const agentHealthy = (socketPath: string, timeoutMs = 30_000) => agentCall<unknown>(socketPath, 'GET', ENROLLMENT_PATHS.health, undefined, timeoutMs);
