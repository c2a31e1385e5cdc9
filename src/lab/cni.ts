// The lab's CNI step: what weft-cni (src/cni/plugin.ts) does on a cluster, with the plugin's own
// decision (decideEnrollment) and the same calls on the node agent's socket. When a pod's
// sandbox exists and before its first container starts, the pod is enrolled with its node's
// agent if the decision says so; fail closed: a pod that should be captured but is not does not
// start. A lab without a mesh (--capture none) has no plugin chained. Like Istio's CNI agent (and
// unlike weft-cni, which runs only at ADD), label changes on a running pod or its namespace
// enroll or release it live.
import { decideEnrollment, enrollPod, releasePod, type EnrollmentDecision, type EnrollmentPod, type PodInfo } from '../api/enrollment.ts';
import type { Pod } from '../kube/objects.ts';
import type { ObjectStore } from './store.ts';

/** What the CNI step knows of a pod the kubelet runs. */
export interface CniPod {
  key: string;
  pod: Pod;
  node: { name: string };
  ip: string;
  ip6: string;
  /** The netns's name (under /run/netns). */
  netns: string;
  cgroup: string;
  enrolled: boolean;
  /** Set when the pod must not start (enrollment failed). */
  error?: string;
  runtime?: { pids(): number[] };
}

/** A node agent as the CNI step calls it (./agents.ts NodeAgent): its enrollment socket. */
export interface EnrollmentAgent {
  readonly socket: string;
  readonly running: boolean;
  waitReady(): Promise<void>;
}

export interface CniHooks {
  /** Called before a pod is enrolled at start: the control plane learns of it first, so its certificate can be issued to this node. */
  beforeEnroll: () => void;
  log: (level: 'info' | 'error', msg: string) => void;
}

const NO_MESH: EnrollmentDecision = { enroll: false, why: 'no mesh' };

export class LabCni {
  constructor(
    /** The node agents, or undefined in a lab without a mesh. */
    private readonly agents: ReadonlyMap<string, EnrollmentAgent> | undefined,
    private readonly store: ObjectStore,
    private readonly hooks: CniHooks,
  ) {}

  /** The plugin's decision for a lab pod, its namespace's labels read from the store. */
  decide(pod: Pod): EnrollmentDecision {
    if (!this.agents) return NO_MESH;
    return decideEnrollment(asEnrollmentPod(pod), this.store.namespace(pod.metadata.namespace)?.metadata.labels);
  }

  /** ADD: a new pod's sandbox is ready; enroll it before its containers start if it is ambient. */
  async add(rec: CniPod): Promise<void> {
    if (!this.decide(rec.pod).enroll) return;
    this.hooks.beforeEnroll();
    await this.sync(rec);
  }

  /** True when a running pod's enrollment no longer matches its labels (or its namespace's). */
  outOfDate(rec: CniPod): boolean {
    return this.decide(rec.pod).enroll !== rec.enrolled;
  }

  /** Enrolls or releases a pod with its node's agent, to match the decision. */
  async sync(rec: CniPod): Promise<void> {
    const agent = this.agents?.get(rec.node.name);
    if (!agent) return;
    const d = this.decide(rec.pod);
    try {
      if (d.enroll) {
        await agent.waitReady();
        await enrollPod(agent.socket, podInfo(d, rec));
      } else await releasePod(agent.socket, rec.pod.metadata.uid!);
      rec.enrolled = d.enroll;
      this.hooks.log('info', `pod ${rec.key} ${d.enroll ? 'enrolled' : 'released'} on ${rec.node.name}`);
    } catch (e) {
      // Fail closed: a pod that should be captured but is not does not start.
      if (d.enroll && !rec.runtime?.pids().length) rec.error = `enrollment failed: ${(e as Error).message}`;
      this.hooks.log('error', `pod ${rec.key}: ${d.enroll ? 'enroll' : 'release'}: ${(e as Error).message}`);
    }
  }

  /** DEL: the pod is going away; its agent, if running, forgets it. */
  async del(rec: CniPod): Promise<void> {
    if (!rec.enrolled) return;
    rec.enrolled = false;
    const agent = this.agents?.get(rec.node.name);
    if (agent?.running) await releasePod(agent.socket, rec.pod.metadata.uid!).catch((e: Error) => this.hooks.log('error', `pod ${rec.key}: release: ${e.message}`));
  }
}

/** A stored pod as the decision reads it (the store has set uid and namespace). */
function asEnrollmentPod(pod: Pod): EnrollmentPod {
  return { metadata: { ...pod.metadata, uid: pod.metadata.uid!, namespace: pod.metadata.namespace! }, spec: pod.spec };
}

/** The sandbox the lab's kubelet made: a named netns, the pod's cgroup, both addresses. */
function podInfo(d: Extract<EnrollmentDecision, { enroll: true }>, rec: CniPod): PodInfo {
  return d.podInfo({ netns: `/run/netns/${rec.netns}`, cgroup: rec.cgroup, ips: [rec.ip, rec.ip6] });
}
