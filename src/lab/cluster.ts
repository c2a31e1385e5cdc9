// The lab's cluster: the objects users applied, the pods running for them, and what follows from
// both (ClusterIPs, endpoints, kube-proxy rules, hosts files). Every change goes through one queue
// and ends in `reconcile`, which moves the running world toward the stored objects.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { renderHosts, renderResolvConf, type NamedService } from './dns.ts';
import { renderKubeProxy, type ServiceEndpoints } from './kubeproxy.ts';
import { cgroup2Mount } from '../bpf/mounts.ts';
import { type LabLayout, MAX_NODES, nodeIP, nodeIP6, podCIDR, podCIDR6, podGateway, podGateway6, podIP6, serviceIP6 } from './layout.ts';
import { createFabric, createNode, createPodNetwork, deleteNetns, nftApply, routeNodes, writeNetnsEtc } from './network.ts';
import { isNamespaced, keyOf, matchesSelector, type Deployment, type KObject, type Pod, type Service } from '../kube/objects.ts';
import { PodRuntime } from './pod-runtime.ts';
import { NodeAgent, type CaptureMode } from './agents.ts';
import { ConfigMirror } from './config-mirror.ts';
import { LabControlPlane } from './control-plane.ts';
import { enrollPod, listWorkloads, releasePod, shouldEnroll } from '../api/enrollment.ts';

export interface LabNode {
  name: string;
  index: number;
  ip: string;
  ip6: string;
  netns: string;
  podCIDR: string;
  podCIDR6: string;
}

interface PodRecord {
  key: string;
  pod: Pod;
  node: LabNode;
  ip: string;
  /** Dual stack: the IPv6 twin of ip. */
  ip6: string;
  veth: string;
  netns: string;
  cgroup: string;
  runtime?: PodRuntime;
  specHash: string;
  error?: string;
  enrolled: boolean;
}

export interface ClusterOptions {
  /** Node agents and how they capture; 'none' runs the lab without a mesh. */
  capture: CaptureMode | 'none';
  /** Workload certificate lifetime agents ask for (seconds); short values exercise rotation. */
  certTtl?: number;
}

/** Istio CNI marks pods whose traffic is redirected to the node proxy with this annotation. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

export interface ApplyOutcome {
  object: string; // "Kind ns/name"
  result: 'created' | 'configured' | 'unchanged' | 'deleted' | 'not found' | 'error';
  error?: string;
}

const podKey = (ns: string, name: string) => `${ns}/${name}`;
const label = (o: KObject) => `${o.kind} ${o.metadata.namespace ? o.metadata.namespace + '/' : ''}${o.metadata.name}`;
const hashOf = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex');
const SAFE = 'bcdfghjklmnpqrstvwxz2456789';
const safeString = (bytes: Buffer, n: number) => [...bytes.subarray(0, n)].map((b) => SAFE[b % SAFE.length]).join('');

export class Cluster extends EventEmitter {
  readonly nodes: LabNode[] = [];
  readonly agents = new Map<string, NodeAgent>();
  control?: LabControlPlane;
  private readonly mirror: ConfigMirror;
  private objects = new Map<string, KObject>();
  private pods = new Map<string, PodRecord>();
  private clusterIPs = new Map<string, string>();
  private queue: Promise<unknown> = Promise.resolve();
  private vethSeq = 0;
  private lastRules = new Map<string, string>();
  private lastHosts = new Map<string, string>();
  private derivedTimer?: NodeJS.Timeout;
  private cg2 = cgroup2Mount();
  private closed = false;
  generation = 0;

  constructor(
    readonly layout: LabLayout,
    readonly opts: ClusterOptions = { capture: 'none' },
  ) {
    super();
    this.mirror = new ConfigMirror(join(layout.stateDir, 'config'));
  }

  /** Serializes every mutation: reconcile never runs twice at once. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  async init(nodeCount: number): Promise<void> {
    if (nodeCount < 1 || nodeCount > MAX_NODES) throw new Error(`--nodes must be between 1 and ${MAX_NODES}`);
    mkdirSync(this.layout.cgroupRoot(this.cg2), { recursive: true });
    await createFabric(this.layout);
    for (let i = 0; i < nodeCount; i++) {
      const name = `node-${i}`;
      await createNode(this.layout, i, name);
      this.nodes.push({ name, index: i, ip: nodeIP(i), ip6: nodeIP6(i), netns: this.layout.nodeNetns(name), podCIDR: podCIDR(i), podCIDR6: podCIDR6(i) });
      mkdirSync(this.layout.nodeCgroup(this.cg2, name), { recursive: true });
    }
    await routeNodes(this.layout, this.nodes.map((n) => n.name));
    for (const ns of ['default', 'kube-system', 'istio-system'])
      this.objects.set(keyOf({ kind: 'Namespace', metadata: { name: ns } }), { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, uid: randomUUID() } });
    await this.syncDerived();
    if (this.opts.capture !== 'none') {
      const onLog = (msg: string) => this.emit('log', { level: 'info', msg });
      this.control = new LabControlPlane(this.layout, join(this.layout.cgroupRoot(this.cg2), 'control'), onLog);
      this.control.start();
      await this.control.waitReady();
      for (const n of this.nodes) {
        const args = [...this.control.agentArgs(this.control.nodeToken(n.name)), ...(this.opts.certTtl ? ['--cert-ttl', String(this.opts.certTtl)] : [])];
        const a = new NodeAgent(n.name, this.layout, this.layout.nodeCgroup(this.cg2, n.name), this.opts.capture, onLog, args);
        this.agents.set(n.name, a);
        a.start();
      }
      await Promise.all([...this.agents.values()].map((a) => a.waitReady(60_000)));
    }
  }

  apply(objs: KObject[]): Promise<ApplyOutcome[]> {
    return this.serial(async () => {
      const order = (k: string) => ['Namespace', 'ServiceAccount', 'Service', 'Deployment', 'Pod'].indexOf(k) + 1 || 9;
      const sorted = [...objs].sort((a, b) => order(a.kind) - order(b.kind));
      const out: ApplyOutcome[] = [];
      for (const raw of sorted) {
        const o = structuredClone(raw);
        delete (o as { __source?: string }).__source;
        const ns = o.metadata.namespace;
        if (ns && isNamespaced(o.kind) && !this.objects.has(`Namespace//${ns}`)) {
          out.push({ object: label(o), result: 'error', error: `metadata.namespace: namespace "${ns}" not found` });
          continue;
        }
        if (o.kind === 'Pod') {
          const nodeName = (o as Pod).spec.nodeName;
          if (nodeName && !this.nodes.some((n) => n.name === nodeName)) {
            out.push({ object: label(o), result: 'error', error: `spec.nodeName: node "${nodeName}" not found` });
            continue;
          }
        }
        const key = keyOf(o);
        const prev = this.objects.get(key);
        // A pod keeps the node it was scheduled to when re-applied without one.
        if (o.kind === 'Pod' && prev && !(o as Pod).spec.nodeName) (o as Pod).spec.nodeName = (prev as Pod).spec.nodeName;
        o.metadata.uid = prev?.metadata.uid ?? randomUUID();
        o.metadata.creationTimestamp = prev?.metadata.creationTimestamp ?? new Date().toISOString();
        if (prev && hashOf(strip(prev)) === hashOf(strip(o))) {
          out.push({ object: label(o), result: 'unchanged' });
          continue;
        }
        this.objects.set(key, o);
        out.push({ object: label(o), result: prev ? 'configured' : 'created' });
      }
      await this.reconcile();
      return out;
    });
  }

  delete(objs: { kind: string; metadata: { name: string; namespace?: string } }[]): Promise<ApplyOutcome[]> {
    return this.serial(async () => {
      const out: ApplyOutcome[] = [];
      for (const o of objs) {
        const key = keyOf({ kind: o.kind, metadata: { name: o.metadata.name, namespace: isNamespaced(o.kind) ? (o.metadata.namespace ?? 'default') : undefined } });
        const prev = this.objects.get(key);
        if (!prev) {
          out.push({ object: `${o.kind} ${o.metadata.name}`, result: 'not found' });
          continue;
        }
        this.objects.delete(key);
        if (prev.kind === 'Namespace')
          for (const [k, v] of this.objects) if (v.metadata.namespace === prev.metadata.name) this.objects.delete(k);
        out.push({ object: label(prev), result: 'deleted' });
      }
      await this.reconcile();
      return out;
    });
  }

  /** Deployments make pods; pods that should run are started, the rest stopped. */
  private async reconcile(): Promise<void> {
    this.reconcileDeployments();
    const wanted = new Map<string, Pod>();
    for (const o of this.objects.values()) if (o.kind === 'Pod') wanted.set(podKey(o.metadata.namespace!, o.metadata.name), o as Pod);
    const stops: Promise<void>[] = [];
    for (const [key, rec] of this.pods) {
      const want = wanted.get(key);
      if (!want || hashOf(want.spec) !== rec.specHash) {
        this.pods.delete(key);
        stops.push(this.teardownPod(rec));
      } else rec.pod = want; // labels and annotations change in place
    }
    await Promise.all(stops);
    // Labels on pods or namespaces enroll and release running pods live.
    for (const rec of this.pods.values()) if (rec.runtime && !rec.error && this.wantsEnrollment(rec.pod) !== rec.enrolled) await this.syncEnrollment(rec);
    for (const [key, pod] of wanted) if (!this.pods.has(key)) await this.startPod(key, pod);
    this.generation++;
    await this.syncDerived();
  }

  private reconcileDeployments(): void {
    const deployments = [...this.objects.values()].filter((o): o is Deployment => o.kind === 'Deployment');
    const live = new Set(deployments.map((d) => d.metadata.uid));
    for (const [k, o] of this.objects) {
      const owner = o.metadata.ownerReferences?.[0];
      if (o.kind === 'Pod' && owner?.kind === 'Deployment' && !live.has(owner.uid)) this.objects.delete(k); // garbage collection
    }
    for (const d of deployments) {
      const ns = d.metadata.namespace!;
      const tmplHash = safeString(Buffer.from(hashOf(d.spec.template), 'hex'), 10);
      const owned = [...this.objects.values()].filter(
        (o): o is Pod => o.kind === 'Pod' && o.metadata.namespace === ns && o.metadata.ownerReferences?.[0]?.uid === d.metadata.uid,
      );
      const current = owned.filter((p) => p.metadata.labels?.['pod-template-hash'] === tmplHash);
      for (const p of owned) if (!current.includes(p)) this.objects.delete(keyOf(p)); // template changed: replace
      const replicas = d.spec.replicas ?? 1;
      // Scale down: remove from the node that has the most replicas, newest first.
      while (current.length > replicas) {
        const perNode = this.countByNode(current);
        current.sort((a, b) => (perNode.get(this.nodeOf(b)) ?? 0) - (perNode.get(this.nodeOf(a)) ?? 0) || (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? ''));
        this.objects.delete(keyOf(current.shift()!));
      }
      while (current.length < replicas) {
        const name = `${d.metadata.name}-${tmplHash}-${safeString(randomBytes(5), 5)}`;
        const node = this.pickNode(current);
        const pod: Pod = {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            name,
            namespace: ns,
            uid: randomUUID(),
            creationTimestamp: new Date().toISOString(),
            labels: { ...(d.spec.template.metadata?.labels ?? {}), 'pod-template-hash': tmplHash },
            annotations: d.spec.template.metadata?.annotations,
            ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name, uid: d.metadata.uid! }],
          },
          spec: { ...structuredClone(d.spec.template.spec), nodeName: d.spec.template.spec.nodeName ?? node.name },
        };
        this.objects.set(keyOf(pod), pod);
        current.push(pod);
      }
    }
  }

  private nodeOf(p: Pod): string {
    return this.pods.get(podKey(p.metadata.namespace!, p.metadata.name))?.node.name ?? p.spec.nodeName ?? '';
  }

  private countByNode(pods: Pod[]): Map<string, number> {
    const m = new Map<string, number>();
    for (const p of pods) m.set(this.nodeOf(p), (m.get(this.nodeOf(p)) ?? 0) + 1);
    return m;
  }

  /** Spread: fewest pods of the same owner, then fewest pods overall, then lowest index. */
  private pickNode(siblings: Pod[]): LabNode {
    const mine = this.countByNode(siblings);
    const all = new Map<string, number>();
    for (const o of this.objects.values()) if (o.kind === 'Pod') all.set((o as Pod).spec.nodeName ?? '', (all.get((o as Pod).spec.nodeName ?? '') ?? 0) + 1);
    return [...this.nodes].sort((a, b) => (mine.get(a.name) ?? 0) - (mine.get(b.name) ?? 0) || (all.get(a.name) ?? 0) - (all.get(b.name) ?? 0) || a.index - b.index)[0]!;
  }

  private allocatePodIP(node: LabNode): string {
    const used = new Set([...this.pods.values()].filter((r) => r.node === node).map((r) => r.ip));
    const base = node.podCIDR.split('.').slice(0, 3).join('.');
    for (let h = 2; h < 255; h++) if (!used.has(`${base}.${h}`)) return `${base}.${h}`;
    throw new Error(`node ${node.name}: pod CIDR ${node.podCIDR} is full`);
  }

  private async startPod(key: string, pod: Pod): Promise<void> {
    const node = pod.spec.nodeName ? this.nodes.find((n) => n.name === pod.spec.nodeName)! : this.pickNode([]);
    pod.spec.nodeName = node.name;
    const ns = pod.metadata.namespace!;
    const ip = this.allocatePodIP(node);
    const rec: PodRecord = {
      key,
      pod,
      node,
      ip,
      ip6: podIP6(ip),
      veth: `vp${this.vethSeq++}`,
      netns: this.layout.podNetns(ns, pod.metadata.name),
      cgroup: this.layout.podCgroup(this.cg2, ns, pod.metadata.name),
      specHash: hashOf(pod.spec),
      enrolled: false,
    };
    this.pods.set(key, rec);
    try {
      await createPodNetwork({ netns: rec.netns, nodeNetns: node.netns, hostVeth: rec.veth, ip: rec.ip, gateway: podGateway(node.index), ip6: rec.ip6, gateway6: podGateway6(node.index) });
      this.writePodEtc(rec);
      mkdirSync(this.layout.logDir, { recursive: true });
      rec.runtime = new PodRuntime(pod, {
        netns: rec.netns,
        cgroup: rec.cgroup,
        ip: rec.ip,
        node: node.name,
        nodeIP: node.ip,
        nodeNetns: node.netns,
        logPath: (c) => this.layout.podLog(ns, pod.metadata.name, c),
      });
      rec.runtime.on('change', () => this.scheduleDerived());
      mkdirSync(rec.cgroup, { recursive: true }); // the runtime makes the pod cgroup before CNI runs
      // As a CNI plugin would: capture is in place before the first container starts. The
      // control plane learns of the pod first, so its certificate can be issued to this node.
      if (this.wantsEnrollment(pod)) {
        this.mirrorNow();
        await this.syncEnrollment(rec);
      }
      if (rec.error) return;
      rec.runtime.start();
    } catch (e) {
      rec.error = (e as Error).message;
      this.emit('log', { level: 'error', msg: `pod ${key}: ${rec.error}` });
    }
  }

  private wantsEnrollment(pod: Pod): boolean {
    if (this.opts.capture === 'none') return false;
    const ns = this.objects.get(`Namespace//${pod.metadata.namespace}`);
    return shouldEnroll(ns?.metadata.labels, pod.metadata.labels);
  }

  /** Enrolls or releases a pod with its node's agent, to match its labels. */
  private async syncEnrollment(rec: PodRecord): Promise<void> {
    const agent = this.agents.get(rec.node.name);
    if (!agent) return;
    const want = this.wantsEnrollment(rec.pod);
    try {
      if (want) {
        await agent.waitReady();
        await enrollPod(agent.socket, {
          uid: rec.pod.metadata.uid!,
          name: rec.pod.metadata.name,
          namespace: rec.pod.metadata.namespace!,
          serviceAccount: rec.pod.spec.serviceAccountName ?? 'default',
          ips: [rec.ip, rec.ip6],
          netns: `/run/netns/${rec.netns}`,
          cgroup: rec.cgroup,
          ...captureAnnotation(rec.pod),
        });
      } else await releasePod(agent.socket, rec.pod.metadata.uid!);
      rec.enrolled = want;
      this.emit('log', { level: 'info', msg: `pod ${rec.key} ${want ? 'enrolled' : 'released'} on ${rec.node.name}` });
    } catch (e) {
      // Fail closed: a pod that should be captured but is not does not start.
      if (want && !rec.runtime?.pids().length) rec.error = `enrollment failed: ${(e as Error).message}`;
      this.emit('log', { level: 'error', msg: `pod ${rec.key}: ${want ? 'enroll' : 'release'}: ${(e as Error).message}` });
    }
  }

  /** Kills a node's agent and keeps it down, or starts it again (the lab's DaemonSet controls). */
  async agentControl(node: string, action: 'kill' | 'start'): Promise<void> {
    const a = this.agents.get(node);
    if (!a) throw new Error(`no agent on node "${node}"`);
    if (action === 'kill') await a.kill();
    else {
      a.start();
      await a.waitReady();
    }
  }

  /** True when every running agent's mesh state shows every ready pod as a healthy workload. */
  async meshConverged(): Promise<boolean> {
    if (this.agents.size === 0) return true;
    const ready = this.snapshot().pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    for (const a of this.agents.values()) {
      if (!a.running) continue;
      const r = await listWorkloads(a.socket, 2000).catch(() => undefined);
      if (!r) return false;
      const healthy = new Set(r.workloads.filter((w) => w.status === 'HEALTHY').map((w) => `${w.namespace}/${w.name}`));
      if (ready.some((p) => !healthy.has(`${p.metadata.namespace}/${p.metadata.name}`))) return false;
    }
    return true;
  }

  /** Kills the control plane and keeps it down, or starts it again. */
  async controlPlaneControl(action: 'kill' | 'start'): Promise<void> {
    if (!this.control) throw new Error('this lab runs no control plane (--capture none)');
    if (action === 'kill') await this.control.kill();
    else {
      this.control.start();
      await this.control.waitReady();
    }
  }

  private async teardownPod(rec: PodRecord): Promise<void> {
    if (rec.enrolled) {
      rec.enrolled = false;
      const agent = this.agents.get(rec.node.name);
      if (agent?.running) await releasePod(agent.socket, rec.pod.metadata.uid!).catch((e: Error) => this.emit('log', { level: 'error', msg: `pod ${rec.key}: release: ${e.message}` }));
    }
    await rec.runtime?.stop();
    await deleteNetns(rec.netns);
  }

  private writePodEtc(rec: PodRecord): void {
    const hosts = renderHosts({ name: rec.pod.metadata.name, ip: rec.ip, namespace: rec.pod.metadata.namespace! }, this.namedServices());
    if (this.lastHosts.get(rec.key) === hosts) return;
    writeNetnsEtc(rec.netns, { hosts, 'resolv.conf': renderResolvConf(rec.pod.metadata.namespace!) });
    this.lastHosts.set(rec.key, hosts);
  }

  private services(): Service[] {
    return [...this.objects.values()].filter((o): o is Service => o.kind === 'Service');
  }

  private clusterIPOf(s: Service): string | undefined {
    const key = keyOf(s);
    let ip = this.clusterIPs.get(key);
    if (ip || s.spec.clusterIP === 'None') return ip;
    const used = new Set(this.clusterIPs.values());
    const asked = s.spec.clusterIP;
    if (asked && /^10\.96\.\d+\.\d+$/.test(asked) && !used.has(asked)) ip = asked;
    for (let n = 10; !ip && n < 65534; n++) {
      const cand = `10.96.${n >> 8}.${n & 255}`;
      if (!used.has(cand)) ip = cand;
    }
    this.clusterIPs.set(key, ip!);
    return ip;
  }

  private namedServices(): NamedService[] {
    return this.services().flatMap((s) => {
      const ip = this.clusterIPOf(s);
      return ip ? [{ name: s.metadata.name, namespace: s.metadata.namespace!, clusterIP: ip }] : [];
    });
  }

  /** Ready endpoints of a service port: the address and resolved targetPort of each pod. */
  endpointsOf(s: Service, port: Service['spec']['ports'][number]): { ip: string; ip6: string; port: number; pod: string; node: string; ready: boolean }[] {
    if (!s.spec.selector) return [];
    const out = [];
    for (const r of this.pods.values()) {
      if (r.pod.metadata.namespace !== s.metadata.namespace || !matchesSelector(r.pod.metadata.labels, s.spec.selector) || !r.runtime) continue;
      const tp = port.targetPort ?? port.port;
      const target = typeof tp === 'number' ? tp : r.pod.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === tp)?.containerPort;
      if (target === undefined) continue;
      out.push({ ip: r.ip, ip6: r.ip6, port: target, pod: r.pod.metadata.name, node: r.node.name, ready: r.runtime.phase === 'Running' && r.runtime.ready });
    }
    return out.sort((a, b) => a.ip.localeCompare(b.ip, undefined, { numeric: true }));
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
    const svcEps: ServiceEndpoints[] = [];
    for (const s of this.services()) {
      const ip = this.clusterIPOf(s);
      if (!ip) continue;
      for (const p of s.spec.ports) {
        const ready = this.endpointsOf(s, p).filter((e) => e.ready);
        svcEps.push({ clusterIP: ip, port: p.port, endpoints: ready });
        svcEps.push({ clusterIP: serviceIP6(ip), port: p.port, endpoints: ready.map((e) => ({ ip: e.ip6, port: e.port })) });
      }
    }
    const rules = renderKubeProxy(svcEps);
    for (const n of this.nodes) {
      if (this.lastRules.get(n.name) === rules) continue;
      try {
        await nftApply(n.netns, rules);
        this.lastRules.set(n.name, rules);
      } catch (e) {
        this.emit('log', { level: 'error', msg: `node ${n.name}: kube-proxy rules: ${(e as Error).message}` });
      }
    }
    for (const r of this.pods.values()) if (r.runtime) this.writePodEtc(r);
    this.mirrorNow();
    this.emit('change');
  }

  /** Writes the cluster's objects, with status, to the control plane's config directory. */
  private mirrorNow(): void {
    const snap = this.snapshot();
    this.mirror.sync([...snap.nodes, ...snap.objects, ...snap.services, ...snap.pods]);
  }

  /** Kubernetes-shaped views of everything, for `weft get` and (later) the control plane. */
  snapshot(): { nodes: KObject[]; pods: Pod[]; services: Service[]; objects: KObject[] } {
    const nodes: KObject[] = this.nodes.map((n) => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: n.name,
        labels: { 'kubernetes.io/hostname': n.name },
        annotations: {
          'weft.dev/netns': n.netns,
          ...(this.agents.has(n.name)
            ? {
                'weft.dev/agent': this.agents.get(n.name)!.running ? 'running' : 'stopped',
                'weft.dev/agent-socket': this.agents.get(n.name)!.socket,
                'weft.dev/agent-pid': String(this.agents.get(n.name)!.pid ?? ''),
              }
            : {}),
        },
      },
      spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR, n.podCIDR6] },
      status: { addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'InternalIP', address: n.ip6 }, { type: 'Hostname', address: n.name }], conditions: [{ type: 'Ready', status: 'True' }] },
    }));
    const pods: Pod[] = [];
    for (const o of this.objects.values()) {
      if (o.kind !== 'Pod') continue;
      const r = this.pods.get(podKey(o.metadata.namespace!, o.metadata.name));
      const rt = r?.runtime;
      const ready = !!rt && rt.phase === 'Running' && rt.ready;
      pods.push({
        ...(o as Pod),
        metadata: {
          ...o.metadata,
          annotations: {
            ...(o.metadata.annotations ?? {}),
            ...(r ? { 'weft.dev/netns': r.netns, 'weft.dev/cgroup': r.cgroup } : {}),
            ...(r?.enrolled ? { [REDIRECTION_ANNOTATION]: 'enabled' } : {}),
          },
        },
        status: {
          phase: rt?.phase ?? 'Pending',
          ...(r ? { podIP: r.ip, podIPs: [{ ip: r.ip }, { ip: r.ip6 }], hostIP: r.node.ip, hostIPs: [{ ip: r.node.ip }, { ip: r.node.ip6 }] } : {}),
          conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
          containerStatuses: (rt?.containers ?? []).map((c) => ({
            name: c.spec.name,
            ready: !!c.proc && c.ready,
            restartCount: c.restarts,
            started: c.started,
            state: c.proc ? { running: { startedAt: c.startedAt } } : c.waitingReason ? { waiting: { reason: c.waitingReason } } : { terminated: { exitCode: c.exitCode ?? 0 } },
          })),
          ...(r?.error ? { message: r.error } : {}),
        } as Pod['status'],
      });
    }
    const byName = (x: KObject, y: KObject) => `${x.metadata.namespace}/${x.metadata.name}`.localeCompare(`${y.metadata.namespace}/${y.metadata.name}`);
    pods.sort(byName);
    const services = this.services().sort(byName).map((s) => {
      const ip = this.clusterIPOf(s);
      // Dual stack like the pods; names in the hosts files stay IPv4 (see README).
      const dual = ip ? { clusterIPs: [ip, serviceIP6(ip)], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' } : { clusterIPs: ['None'] };
      return { ...s, spec: { ...s.spec, clusterIP: ip ?? 'None', ...dual, type: 'ClusterIP' } };
    });
    const objects = [...this.objects.values()].filter((o) => !['Pod', 'Service'].includes(o.kind));
    return { nodes, pods, services, objects };
  }

  /** Details `weft exec` needs to enter a pod. */
  podPlacement(ns: string, name: string) {
    const r = this.pods.get(podKey(ns, name));
    return r && { netns: r.netns, cgroup: r.cgroup, ip: r.ip, node: r.node.name, nodeIP: r.node.ip, pod: r.pod };
  }

  async shutdown(): Promise<void> {
    this.closed = true;
    if (this.derivedTimer) clearTimeout(this.derivedTimer);
    await this.serial(async () => {
      await Promise.all([...this.pods.values()].map((r) => this.teardownPod(r)));
      this.pods.clear();
      await Promise.all([...this.agents.values()].map((a) => a.stop()));
      await this.control?.stop();
    });
  }
}

/** `weft.dev/capture: iptables|ebpf` on a pod picks its capture mode (benchmarks use both). */
function captureAnnotation(pod: Pod): { capture?: 'ebpf' | 'iptables' } {
  const v = pod.metadata.annotations?.['weft.dev/capture'];
  return v === 'ebpf' || v === 'iptables' ? { capture: v } : {};
}

/** What makes two versions of an object different for `apply` (server-set fields excluded). */
function strip(o: KObject): unknown {
  const { uid: _u, creationTimestamp: _c, ...meta } = o.metadata;
  return { ...o, metadata: meta, status: undefined };
}
