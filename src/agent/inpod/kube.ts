// The agent's side of Kubernetes, as istio-cni's node agent does it:
// - once a pod's capture is in place it annotates the pod ambient.istio.io/redirection=enabled
//   (the control plane serves only annotated pods with tunnel protocol HBONE, so peers send them
//   mTLS), and removes the annotation when it releases the pod. The patch goes to pods/status (the
//   lower privilege; both may change metadata) and carries the pod's uid, so a pod replaced under
//   the same name (a StatefulSet's) is never marked for its predecessor.
// - at start it reconciles: every pod running on its node that should be in the mesh (the CNI
//   plugin's decision, decideEnrollment in src/api/enrollment.ts: namespace
//   or pod labelled istio.io/dataplane-mode=ambient, not opted out with none, not host network)
//   is enrolled, whether it started while the agent was away (the CNI plugin made it wait, but
//   pods already running when the plugin was first chained never passed through it) or was
//   enrolled before and only needs its annotation back.
// The pods' network namespaces come from /proc: any process whose cgroup is the pod's (cgroup
// v2 paths name the pod UID, for both kubelet cgroup drivers) holds the sandbox's netns, which
// every container of a pod shares. Limit: the agent must see the host's PIDs (hostPID) and the
// host's cgroup paths; a process whose cgroup path is outside the agent's cgroup namespace (../)
// is not used.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { cgroup2Mount } from '../../bpf/mounts.ts';
import { kubeGet, kubeMergePatch, KubeError, namespacePath, podPath, type KubeAccess, type NamespaceMeta, type PodMeta } from '../../kube/client.ts';
import { sleep } from '../../util/sleep.ts';
import { decideEnrollment, REDIRECTION_ANNOTATION, type EnrollmentDecision, type PodInfo } from '../../api/enrollment.ts';
import type { PodHooks, PodManager } from './pod-manager.ts';
import { procStartTime } from './proc.ts';

export { REDIRECTION_ANNOTATION };

/** Pod UIDs named by a cgroup path: cgroupfs `pod<uid>`, systemd `...-pod<uid_with_underscores>.slice`. */
export function podUidOfCgroup(path: string): string | undefined {
  for (const part of path.split('/').reverse()) {
    const m = /^pod([0-9a-f-]{36})$/.exec(part) ?? /-pod([0-9a-f_]{36})\.slice$/.exec(part);
    if (m) return m[1]!.replace(/_/g, '-');
  }
  return undefined;
}

export interface PodSandbox {
  /** /proc/<pid>/ns/net of one of the pod's processes. */
  netns: string;
  /** The pod's cgroup directory (the ancestor named after its UID). */
  cgroup: string;
}

/** Finds a process of each wanted pod in /proc: its netns and the pod's cgroup. */
export function findPodSandboxes(uids: ReadonlySet<string>, o: { proc?: string; cgroupRoot?: string } = {}): Map<string, PodSandbox> {
  const proc = o.proc ?? '/proc';
  const found = new Map<string, PodSandbox>();
  if (uids.size === 0) return found;
  const root = o.cgroupRoot ?? cgroup2Mount();
  let hostNetns: string | undefined;
  try {
    hostNetns = readlinkSync(join(proc, '1', 'ns', 'net'));
  } catch {}
  // Lowest PID first: usually the sandbox (pause) process, which lives as long as the pod.
  const pids = readdirSync(proc).filter((e) => /^\d+$/.test(e)).sort((x, y) => Number(x) - Number(y));
  for (const pid of pids) {
    let line: string | undefined;
    try {
      line = readFileSync(join(proc, pid, 'cgroup'), 'utf8').split('\n').find((l) => l.startsWith('0::'));
    } catch {
      continue; // exited meanwhile
    }
    const path = line?.slice(3);
    if (!path || path.includes('/..')) continue;
    const uid = podUidOfCgroup(path);
    if (!uid || !uids.has(uid) || found.has(uid)) continue;
    try {
      // Never the host's netns: that is a host-network pod, which is not captured.
      if (hostNetns && readlinkSync(join(proc, pid, 'ns', 'net')) === hostNetns) continue;
    } catch {
      continue;
    }
    const parts = path.split('/');
    const at = parts.findIndex((p) => podUidOfCgroup(p) === uid);
    found.set(uid, { netns: join(proc, pid, 'ns', 'net'), cgroup: join(root, ...parts.slice(0, at + 1)) });
  }
  return found;
}

const podIps = (p: PodMeta): string[] => [...new Set([...(p.status?.podIPs ?? []).map((i) => i.ip), ...(p.status?.podIP ? [p.status.podIP] : [])])].filter((ip) => isIP(ip) !== 0);

export class KubePods implements PodHooks {
  constructor(
    private readonly kube: KubeAccess,
    readonly node: string,
    private readonly log: Logger,
  ) {}

  /** Sets (or removes) the redirection annotation on the pod with this uid. */
  async annotate(info: Pick<PodInfo, 'uid' | 'name' | 'namespace'>, enabled: boolean): Promise<void> {
    const patch = { metadata: { uid: info.uid, annotations: { [REDIRECTION_ANNOTATION]: enabled ? 'enabled' : null } } };
    try {
      const r = await kubeMergePatch(this.kube, `${podPath(info.namespace, info.name)}/status`, patch);
      if (r === undefined && enabled) throw new Error('the pod does not exist');
    } catch (e) {
      // A uid that no longer matches: the pod was replaced, and the new one is not ours to touch.
      if (!enabled && e instanceof KubeError && (e.status === 409 || e.status === 422)) return;
      throw new Error(`pod ${info.namespace}/${info.name}: cannot ${enabled ? 'set' : 'remove'} annotation ${REDIRECTION_ANNOTATION}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Capture is in place: mark the pod (the enrollment is acknowledged only once it is marked). */
  enrolled(info: PodInfo): Promise<void> {
    return this.annotate(info, true);
  }

  /** Best effort: a deleted pod needs no unmarking, and a failure must not keep a pod captured. */
  async released(info: PodInfo): Promise<void> {
    await this.annotate(info, false).catch((e: Error) => this.log.warn({ pod: `${info.namespace}/${info.name}`, err: e.message }, 'redirection annotation not removed'));
  }

  /** The pods on this node the mesh should capture, each with the CNI plugin's decision. */
  async wanted(): Promise<{ pod: PodMeta; decision: Extract<EnrollmentDecision, { enroll: true }> }[]> {
    const list = await kubeGet<{ items?: PodMeta[] }>(this.kube, `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${this.node}`)}`);
    // Running pods only: one still pending gets to the agent through the CNI plugin (which fails
    // its ADD, for the kubelet to retry, while no agent answers).
    const pods = (list?.items ?? []).filter((p) => !p.metadata.deletionTimestamp && p.status?.phase === 'Running');
    const namespaces = new Map<string, NamespaceMeta | undefined>();
    for (const ns of new Set(pods.map((p) => p.metadata.namespace))) namespaces.set(ns, await kubeGet<NamespaceMeta>(this.kube, namespacePath(ns)));
    const out: Awaited<ReturnType<KubePods['wanted']>> = [];
    for (const pod of pods) {
      const decision = decideEnrollment(pod, namespaces.get(pod.metadata.namespace)?.metadata.labels);
      if (decision.enroll) out.push({ pod, decision });
    }
    return out;
  }

  /**
   * One pass: enrolls the wanted pods the agent does not have (when their sandbox is found) and
   * annotates the ones it has that lost (or never got) the annotation. Returns the pods it could
   * not settle, to try again.
   */
  async reconcile(pods: PodManager, o: { proc?: string; cgroupRoot?: string } = {}): Promise<string[]> {
    const wanted = await this.wanted();
    const have = new Set(pods.list().map((p) => p.info.uid));
    const missing = wanted.map((w) => w.pod).filter((p) => !have.has(p.metadata.uid));
    const sandboxes = findPodSandboxes(new Set(missing.map((p) => p.metadata.uid)), o);
    const unsettled: string[] = [];
    for (const { pod: p, decision } of wanted) {
      const name = `${p.metadata.namespace}/${p.metadata.name}`;
      try {
        if (have.has(p.metadata.uid)) {
          if (p.metadata.annotations?.[REDIRECTION_ANNOTATION] !== 'enabled') {
            await this.annotate(p.metadata, true);
            this.log.info({ pod: name }, 'redirection annotation restored');
          }
          continue;
        }
        const sb = sandboxes.get(p.metadata.uid);
        if (!sb) throw new Error('no process of the pod found (sandbox not started yet?)');
        const pid = Number(/\/(\d+)\/ns\/net$/.exec(sb.netns)![1]);
        const info: PodInfo = { ...decision.podInfo({ ips: podIps(p), netns: sb.netns, cgroup: sb.cgroup }), pidStartTime: procStartTime(pid, o.proc) };
        await pods.enroll(info); // annotates through the hooks
        this.log.info({ pod: name, netns: sb.netns }, 'running pod enrolled at start');
      } catch (e) {
        unsettled.push(name);
        this.log.warn({ pod: name, err: (e as Error).message }, 'pod not reconciled yet');
      }
    }
    return unsettled;
  }

  /** Reconciles until every wanted pod is settled (or `stopped` says so), backing off to 30 s. */
  async reconcileUntilSettled(pods: PodManager, stopped: () => boolean = () => false): Promise<void> {
    for (let attempt = 0; !stopped(); attempt++) {
      try {
        const left = await this.reconcile(pods);
        if (left.length === 0) {
          this.log.info({ node: this.node }, 'pods on this node reconciled with the API');
          return;
        }
      } catch (e) {
        this.log.warn({ err: (e as Error).message, attempt }, 'cannot list the pods of this node; retrying');
      }
      await sleep(Math.min(500 * 2 ** attempt, 30_000));
    }
  }
}
