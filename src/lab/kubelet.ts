// The lab's kubelet, for every node at once: starts the pods the store holds and stops the rest.
// Starting one is what a kubelet and its container runtime do: an address from the node's pod
// CIDR, a network namespace wired to the node, the pod's cgroup, its hosts and resolv.conf, then
// the CNI step (./cni.ts, weft's plugin) and, unless that refused, the containers.
import { mkdirSync } from 'node:fs';
import { renderHosts, renderResolvConf, type NamedService } from './dns.ts';
import { type LabLayout, podGateway, podGateway6, podIP6 } from './layout.ts';
import { createPodNetwork, deleteNetns, writeNetnsEtc } from './network.ts';
import type { Pod } from '../kube/objects.ts';
import { PodRuntime } from './pod-runtime.ts';
import type { CniPod, LabCni } from './cni.ts';
import type { LabNode } from './nodes.ts';
import { hashOf } from './store.ts';
import { containerMounts, prepareVolumes, removeVolumes, type VolumeSources } from './volumes.ts';
import { join } from 'node:path';

export interface PodRecord extends CniPod {
  node: LabNode;
  veth: string;
  runtime?: PodRuntime;
  /** The spec the pod was started with: another one restarts the pod. */
  specHash: string;
}

export interface KubeletDeps {
  cni: LabCni;
  /** Where a pod with no spec.nodeName runs. */
  pickNode: () => LabNode;
  /** The services a pod's hosts file lists. */
  services: () => NamedService[];
  /** A container started, stopped or changed readiness. */
  onChange: () => void;
  log: (level: 'info' | 'error', msg: string) => void;
  /** Where tokens and ConfigMaps for volumes come from. */
  volumes: VolumeSources;
}

export const podKey = (ns: string, name: string) => `${ns}/${name}`;

export class Kubelet {
  readonly pods = new Map<string, PodRecord>();
  private vethSeq = 0;
  private lastHosts = new Map<string, string>();

  constructor(
    private readonly layout: LabLayout,
    private readonly cg2: string,
    private readonly nodes: readonly LabNode[],
    private readonly deps: KubeletDeps,
  ) {}

  /** The record of a running (or failed) pod. */
  get(ns: string, name: string): PodRecord | undefined {
    return this.pods.get(podKey(ns, name));
  }

  /** Pods that should run are started, the rest stopped; a changed spec restarts a pod. */
  async sync(wanted: Map<string, Pod>): Promise<void> {
    const stops: Promise<void>[] = [];
    for (const [key, rec] of this.pods) {
      const want = wanted.get(key);
      if (!want || hashOf(want.spec) !== rec.specHash) {
        this.pods.delete(key);
        stops.push(this.teardown(rec));
      } else rec.pod = want; // labels and annotations change in place
    }
    await Promise.all(stops);
    // Labels on pods or namespaces enroll and release running pods live.
    for (const rec of this.pods.values()) if (rec.runtime && !rec.error && this.deps.cni.outOfDate(rec)) await this.deps.cni.sync(rec);
    for (const [key, pod] of wanted) if (!this.pods.has(key)) await this.start(key, pod);
  }

  private allocatePodIP(node: LabNode): string {
    const used = new Set([...this.pods.values()].filter((r) => r.node === node).map((r) => r.ip));
    const base = node.podCIDR.split('.').slice(0, 3).join('.');
    for (let h = 2; h < 255; h++) if (!used.has(`${base}.${h}`)) return `${base}.${h}`;
    throw new Error(`node ${node.name}: pod CIDR ${node.podCIDR} is full`);
  }

  private async start(key: string, pod: Pod): Promise<void> {
    const node = pod.spec.nodeName ? this.nodes.find((n) => n.name === pod.spec.nodeName)! : this.deps.pickNode();
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
      this.writeEtc(rec);
      const dirs = prepareVolumes(pod, this.volumeRoot(rec), this.deps.volumes);
      mkdirSync(this.layout.logDir, { recursive: true });
      rec.runtime = new PodRuntime(pod, {
        netns: rec.netns,
        cgroup: rec.cgroup,
        ip: rec.ip,
        node: node.name,
        nodeIP: node.ip,
        nodeNetns: node.netns,
        logPath: (c) => this.layout.podLog(ns, pod.metadata.name, c),
        mounts: (c) => containerMounts(c, dirs),
        stage: join(this.volumeRoot(rec), '.run'),
      });
      rec.runtime.on('change', () => this.deps.onChange());
      mkdirSync(rec.cgroup, { recursive: true }); // the runtime makes the pod cgroup before CNI runs
      // As on a node: capture is in place before the first container starts.
      await this.deps.cni.add(rec);
      if (rec.error) return;
      rec.runtime.start();
    } catch (e) {
      rec.error = (e as Error).message;
      this.deps.log('error', `pod ${key}: ${rec.error}`);
    }
  }

  async teardown(rec: PodRecord): Promise<void> {
    await this.deps.cni.del(rec);
    await rec.runtime?.stop();
    await deleteNetns(rec.netns);
    removeVolumes(this.volumeRoot(rec));
  }

  /** The pod's volumes and the scratch directory for mounting them. */
  private volumeRoot(rec: PodRecord): string {
    return join(this.layout.stateDir, 'volumes', `${rec.pod.metadata.namespace}_${rec.pod.metadata.name}`);
  }

  /** Rewrites every running pod's hosts file whose contents changed (services came or went). */
  refreshEtc(): void {
    for (const r of this.pods.values()) if (r.runtime) this.writeEtc(r);
  }

  private writeEtc(rec: PodRecord): void {
    const hosts = renderHosts({ name: rec.pod.metadata.name, ip: rec.ip, namespace: rec.pod.metadata.namespace! }, this.deps.services());
    if (this.lastHosts.get(rec.key) === hosts) return;
    writeNetnsEtc(rec.netns, { hosts, 'resolv.conf': renderResolvConf(rec.pod.metadata.namespace!) });
    this.lastHosts.set(rec.key, hosts);
  }

  /** Stops every pod. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.pods.values()].map((r) => this.teardown(r)));
    this.pods.clear();
  }
}
