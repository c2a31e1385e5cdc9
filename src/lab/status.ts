// What `weft get` shows and the control plane reads (through the config mirror): the lab's
// objects as the API server would serve them, with status. Nodes with their addresses and agent,
// pods with phase, addresses, readiness, containers and the mesh's redirection mark, services with
// their ClusterIPs in both families.
import { REDIRECTION_ANNOTATION } from '../api/enrollment.ts';
import type { KObject, Pod, Service } from '../kube/objects.ts';
import type { NodeAgent } from './agents.ts';
import type { PodRecord } from './kubelet.ts';
import { serviceIP6 } from './layout.ts';
import type { LabNode } from './nodes.ts';

export interface Snapshot {
  nodes: KObject[];
  pods: Pod[];
  services: Service[];
  objects: KObject[];
}

export interface SnapshotSource {
  nodes: readonly LabNode[];
  agents: ReadonlyMap<string, NodeAgent>;
  objects: Iterable<KObject>;
  /** The kubelet's record of a pod, if it was started. */
  podRecord: (ns: string, name: string) => PodRecord | undefined;
  services: Service[];
  clusterIPOf: (s: Service) => string | undefined;
}

export function nodeObject(n: LabNode, agent: NodeAgent | undefined): KObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: { 'kubernetes.io/hostname': n.name },
      annotations: {
        'weft.dev/netns': n.netns,
        ...(agent ? { 'weft.dev/agent': agent.running ? 'running' : 'stopped', 'weft.dev/agent-socket': agent.socket, 'weft.dev/agent-pid': String(agent.pid ?? '') } : {}),
      },
    },
    spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR, n.podCIDR6] },
    status: { addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'InternalIP', address: n.ip6 }, { type: 'Hostname', address: n.name }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

/** A stored pod with what the kubelet and the CNI step know of it. */
export function podWithStatus(o: Pod, r: PodRecord | undefined): Pod {
  const rt = r?.runtime;
  const ready = !!rt && rt.phase === 'Running' && rt.ready;
  return {
    ...o,
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
  };
}

/** Dual stack like the pods; names in the hosts files stay IPv4 (see README). */
export function serviceWithStatus(s: Service, ip: string | undefined): Service {
  const dual = ip ? { clusterIPs: [ip, serviceIP6(ip)], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' } : { clusterIPs: ['None'] };
  return { ...s, spec: { ...s.spec, clusterIP: ip ?? 'None', ...dual, type: 'ClusterIP' } };
}

/** Kubernetes-shaped views of everything, for `weft get` and the control plane. */
export function snapshot(src: SnapshotSource): Snapshot {
  const nodes = src.nodes.map((n) => nodeObject(n, src.agents.get(n.name)));
  const objects = [...src.objects];
  const pods = objects.filter((o): o is Pod => o.kind === 'Pod').map((o) => podWithStatus(o, src.podRecord(o.metadata.namespace!, o.metadata.name)));
  const byName = (x: KObject, y: KObject) => `${x.metadata.namespace}/${x.metadata.name}`.localeCompare(`${y.metadata.namespace}/${y.metadata.name}`);
  pods.sort(byName);
  const services = src.services.sort(byName).map((s) => serviceWithStatus(s, src.clusterIPOf(s)));
  return { nodes, pods, services, objects: objects.filter((o) => !['Pod', 'Service'].includes(o.kind)) };
}
