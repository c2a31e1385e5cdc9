// The lab's cluster: the objects users applied (./store.ts), the pods running for them
// (./kubelet.ts, with weft's CNI step in ./cni.ts), and what follows from both (ClusterIPs and
// endpoints in ./services.ts, kube-proxy rules, hosts files, the control plane's mirror, status).
// This class only composes them: every change goes through one queue and ends in `reconcile`,
// which moves the running world toward the stored objects.
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { cgroup2Mount } from '../bpf/mounts.ts';
import type { KObject, Pod, Service } from '../kube/objects.ts';
import type { CaptureMode, NodeAgent } from './agents.ts';
import { LabCni } from './cni.ts';
import { ConfigMirror } from './config-mirror.ts';
import { reconcileDeployments } from './controllers/deployments.ts';
import { reconcileWaypoints, updateWaypointStatus, type WaypointConflicts } from './controllers/waypoints.ts';
import { FABRIC_IP } from './layout.ts';
import { KubeProxy } from './kubeproxy.ts';
import { Kubelet, podKey } from './kubelet.ts';
import type { LabLayout } from './layout.ts';
import { LabMesh } from './mesh.ts';
import { createNodes, type LabNode } from './nodes.ts';
import { Scheduler } from './scheduler.ts';
import { Services } from './services.ts';
import { snapshot, type Snapshot } from './status.ts';
import { ObjectStore, type ApplyOutcome } from './store.ts';

export type { ApplyOutcome } from './store.ts';
export type { LabNode } from './nodes.ts';

export interface ClusterOptions {
  /** Node agents and how they capture; 'none' runs the lab without a mesh. */
  capture: CaptureMode | 'none';
  /** Workload certificate lifetime agents ask for (seconds); short values exercise rotation. */
  certTtl?: number;
}

export class Cluster extends EventEmitter {
  readonly nodes: LabNode[] = [];
  private readonly store = new ObjectStore();
  private readonly mirror: ConfigMirror;
  private readonly mesh?: LabMesh;
  private readonly kubelet: Kubelet;
  private readonly scheduler: Scheduler;
  private readonly services: Services;
  private readonly kubeProxy: KubeProxy;
  private queue: Promise<unknown> = Promise.resolve();
  private derivedTimer?: NodeJS.Timeout;
  private cg2 = cgroup2Mount();
  private closed = false;
  private waypointConflicts: WaypointConflicts = new Map();
  generation = 0;

  constructor(
    readonly layout: LabLayout,
    readonly opts: ClusterOptions = { capture: 'none' },
  ) {
    super();
    this.mirror = new ConfigMirror(join(layout.stateDir, 'config'));
    const log = (level: 'info' | 'error', msg: string) => this.emit('log', { level, msg });
    if (opts.capture !== 'none') this.mesh = new LabMesh(layout, this.cg2, opts.capture, opts.certTtl, (msg) => log('info', msg));
    const cni = new LabCni(this.mesh?.agents, this.store, { beforeEnroll: () => this.mirrorNow(), log });
    this.scheduler = new Scheduler(this.nodes, this.store, (p) => this.kubelet.get(p.metadata.namespace!, p.metadata.name)?.node.name);
    this.kubelet = new Kubelet(layout, this.cg2, this.nodes, {
      cni,
      pickNode: () => this.scheduler.pickNode([]),
      services: () => this.services.named(),
      onChange: () => this.scheduleDerived(),
      log,
      volumes: {
        token: (ns, sa, audience) => {
          if (!this.mesh?.control) throw new Error('this lab runs no control plane to issue service account tokens (--capture none)');
          if (audience !== undefined && audience !== 'istio-ca') throw new Error(`the lab issues service account tokens only for audience istio-ca, not ${JSON.stringify(audience)}`);
          return this.mesh.control.workloadToken(ns, sa);
        },
        configMap: (ns, name) => {
          // istiod publishes the mesh root in every namespace under this name.
          if (name === 'istio-ca-root-cert' && this.mesh?.control) return { 'root-cert.pem': this.mesh.control.rootCertPem() };
          const cm = this.store.get(`ConfigMap/${ns}/${name}`) as { data?: Record<string, string> } | undefined;
          return cm ? (cm.data ?? {}) : undefined;
        },
      },
    });
    this.services = new Services(this.store, this.kubelet.pods);
    this.kubeProxy = new KubeProxy(this.nodes, (msg) => log('error', msg));
  }

  /** The node agents (none without a mesh). */
  get agents(): ReadonlyMap<string, NodeAgent> {
    return this.mesh?.agents ?? new Map();
  }

  get control() {
    return this.mesh?.control;
  }

  /** Serializes every mutation: reconcile never runs twice at once. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async init(nodeCount: number): Promise<void> {
    await createNodes(this.layout, nodeCount, this.cg2, this.nodes);
    this.store.seed();
    await this.syncDerived();
    await this.mesh?.start(this.nodes);
  }

  apply(objs: KObject[]): Promise<ApplyOutcome[]> {
    return this.serial(async () => {
      const out = this.store.apply(objs, (name) => this.nodes.some((n) => n.name === name));
      await this.reconcile();
      return out;
    });
  }

  delete(objs: { kind: string; metadata: { name: string; namespace?: string } }[]): Promise<ApplyOutcome[]> {
    return this.serial(async () => {
      const out = this.store.delete(objs);
      await this.reconcile();
      return out;
    });
  }

  /** Deployments make pods; pods that should run are started, the rest stopped. */
  private async reconcile(): Promise<void> {
    // Waypoints run only where there is a mesh: their pods need the control plane.
    if (this.mesh) this.waypointConflicts = reconcileWaypoints(this.store, { image: 'weft', controlAddress: `${FABRIC_IP}:15012`, trustDomain: 'cluster.local' });
    reconcileDeployments(this.store, this.scheduler);
    const wanted = new Map<string, Pod>();
    for (const o of this.store.ofKind<Pod>('Pod')) wanted.set(podKey(o.metadata.namespace!, o.metadata.name), o);
    await this.kubelet.sync(wanted);
    this.generation++;
    await this.syncDerived();
  }

  /** Kills a node's agent and keeps it down, or starts it again (the lab's DaemonSet controls). */
  async agentControl(node: string, action: 'kill' | 'start' | 'upgrade'): Promise<{ oldPid?: number; newPid?: number } | void> {
    if (!this.mesh) throw new Error(`no agent on node "${node}"`);
    return this.mesh.agentControl(node, action);
  }

  /** True when every running agent's mesh state shows every ready pod as a healthy workload. */
  async meshConverged(): Promise<boolean> {
    if (this.agents.size === 0) return true;
    const ready = this.snapshot().pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    return this.mesh!.converged(ready);
  }

  /** Kills the control plane and keeps it down, or starts it again. */
  async controlPlaneControl(action: 'kill' | 'start'): Promise<void> {
    if (!this.mesh) throw new Error('this lab runs no control plane (--capture none)');
    await this.mesh.controlPlaneControl(action);
  }

  /** Starts a new control plane replica beside the running one, then drains the old one (LabMesh.controlPlaneUpgrade). */
  async controlPlaneUpgrade(): Promise<{ oldPid?: number; newPid?: number; drainMs: number }> {
    if (!this.mesh) throw new Error('this lab runs no control plane (--capture none)');
    return this.mesh.controlPlaneUpgrade();
  }

  /** Ready endpoints of a service port: the address and resolved targetPort of each pod. */
  endpointsOf(s: Service, port: Service['spec']['ports'][number]) {
    return this.services.endpointsOf(s, port);
  }

  private scheduleDerived(): void {
    if (this.derivedTimer || this.closed) return;
    // Coalesce bursts of container events (many pods starting) into one rules update.
    this.derivedTimer = setTimeout(() => {
      this.derivedTimer = undefined;
      void this.serial(() => this.syncDerived());
    }, 20);
  }

  /** Kube-proxy rules in every node and hosts files in every pod, rewritten only when changed. */
  private async syncDerived(): Promise<void> {
    if (this.closed) return;
    await this.kubeProxy.sync(this.services.readyEndpoints());
    this.kubelet.refreshEtc();
    if (this.mesh) updateWaypointStatus(this.store, this.snapshot().pods, (s) => this.services.clusterIPOf(s), this.waypointConflicts);
    this.mirrorNow();
    this.emit('change');
  }

  /** Writes the cluster's objects, with status, to the control plane's config directory. */
  private mirrorNow(): void {
    const snap = this.snapshot();
    this.mirror.sync([...snap.nodes, ...snap.objects, ...snap.services, ...snap.pods]);
  }

  /** Kubernetes-shaped views of everything, for `weft get` and the control plane. */
  snapshot(): Snapshot {
    return snapshot({
      nodes: this.nodes,
      agents: this.agents,
      objects: this.store.values(),
      podRecord: (ns, name) => this.kubelet.get(ns, name),
      services: this.services.all(),
      clusterIPOf: (s) => this.services.clusterIPOf(s),
    });
  }

  /** Details `weft exec` needs to enter a pod. */
  podPlacement(ns: string, name: string) {
    const r = this.kubelet.get(ns, name);
    return r && { netns: r.netns, cgroup: r.cgroup, ip: r.ip, node: r.node.name, nodeIP: r.node.ip, pod: r.pod };
  }

  async shutdown(): Promise<void> {
    this.closed = true;
    if (this.derivedTimer) clearTimeout(this.derivedTimer);
    await this.serial(async () => {
      await this.kubelet.stopAll();
      await this.mesh?.stop();
    });
  }
}
