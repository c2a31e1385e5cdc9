// Kubernetes objects -> the workload API: a Workload per running pod, a Service per ClusterIP
// service. Pure functions of their inputs, so the model builder can reuse what did not change.
import { isIP } from 'node:net';
import type { PortMapping, Service, Workload } from '../../../api/mesh.ts';
import type { KObject, Pod, Service as KService } from '../../../kube/objects.ts';
import { matchesSelector } from '../../../kube/objects.ts';

export interface MeshOptions {
  trustDomain: string;
  clusterId: string;
  rootNamespace: string;
  clusterDomain: string;
}

export const DEFAULT_MESH: MeshOptions = { trustDomain: 'cluster.local', clusterId: 'Kubernetes', rootNamespace: 'istio-system', clusterDomain: 'cluster.local' };

/** Istio CNI (and the lab) annotate pods whose traffic the node agent captures. */
const REDIRECTED = 'ambient.istio.io/redirection';

export const serviceHostname = (s: { metadata: { name: string; namespace?: string } }, o: MeshOptions) => `${s.metadata.name}.${s.metadata.namespace}.svc.${o.clusterDomain}`;

function workloadOwner(pod: Pod): { type: Workload['workloadType']; name: string } {
  const owner = pod.metadata.ownerReferences?.[0];
  if (owner?.kind === 'Deployment') return { type: 'DEPLOYMENT', name: owner.name };
  if (owner?.kind === 'ReplicaSet') {
    const hash = pod.metadata.labels?.['pod-template-hash'];
    return { type: 'DEPLOYMENT', name: hash && owner.name.endsWith(`-${hash}`) ? owner.name.slice(0, -hash.length - 1) : owner.name };
  }
  if (owner?.kind === 'Job') return { type: 'JOB', name: owner.name };
  if (owner?.kind === 'CronJob') return { type: 'CRONJOB', name: owner.name };
  return { type: 'POD', name: pod.metadata.name };
}

/** Resolves a service port's targetPort against one pod (named ports differ per pod). */
export function targetPortFor(pod: Pod, port: KService['spec']['ports'][number]): number | undefined {
  const tp = port.targetPort ?? port.port;
  if (typeof tp === 'number') return tp;
  return pod.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === tp)?.containerPort;
}

const isReady = (p: Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

/** A WORKLOAD_SELECTOR AuthorizationPolicy: listed on the workloads its selector matches. */
export interface SelectorPolicy {
  key: string;
  namespace: string;
  selector: Record<string, string>;
}

/**
 * Every address of a pod: status.podIPs (dual stack: one per family, podIP first), else podIP.
 * Text that is not an IP is skipped: it could never match a connection, and encoding it would fail.
 */
export function podAddresses(pod: Pod): string[] {
  const all = [pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p?.ip)];
  return [...new Set(all.filter((a): a is string => typeof a === 'string' && isIP(a) !== 0 && !a.includes('%')))];
}

export function buildWorkload(pod: Pod, services: readonly KService[], selectorPolicies: readonly SelectorPolicy[], o: MeshOptions): Workload | undefined {
  const addresses = podAddresses(pod);
  if (addresses.length === 0 || pod.status?.phase !== 'Running') return undefined;
  const ns = pod.metadata.namespace ?? 'default';
  const labels = pod.metadata.labels ?? {};
  const owner = workloadOwner(pod);
  const svcPorts: Record<string, PortMapping[]> = {};
  for (const s of services) {
    if (s.metadata.namespace !== ns || !matchesSelector(labels, s.spec.selector)) continue;
    svcPorts[`${ns}/${serviceHostname(s, o)}`] = s.spec.ports.flatMap((p) => {
      const target = targetPortFor(pod, p);
      return target === undefined ? [] : [{ servicePort: p.port, targetPort: target }];
    });
  }
  return {
    uid: `${o.clusterId}//Pod/${ns}/${pod.metadata.name}`,
    name: pod.metadata.name,
    namespace: ns,
    addresses,
    network: '',
    tunnelProtocol: pod.metadata.annotations?.[REDIRECTED] === 'enabled' ? 'HBONE' : 'NONE',
    trustDomain: o.trustDomain,
    serviceAccount: pod.spec.serviceAccountName ?? 'default',
    node: pod.spec.nodeName ?? '',
    canonicalName: labels['service.istio.io/canonical-name'] ?? labels['app.kubernetes.io/name'] ?? labels.app ?? owner.name,
    canonicalRevision: labels['service.istio.io/canonical-revision'] ?? labels['app.kubernetes.io/version'] ?? labels.version ?? 'latest',
    workloadType: owner.type,
    workloadName: owner.name,
    services: svcPorts,
    authorizationPolicies: [...new Set(selectorPolicies.filter((p) => (p.namespace === ns || p.namespace === o.rootNamespace) && matchesSelector(labels, p.selector)).map((p) => p.key))].sort(),
    status: isReady(pod) ? 'HEALTHY' : 'UNHEALTHY',
    clusterId: o.clusterId,
  };
}

/** Every VIP of a service: spec.clusterIPs (dual stack, clusterIP first), else clusterIP; None is none. */
export function serviceAddresses(s: KService): string[] {
  const all = [s.spec.clusterIP, ...(Array.isArray(s.spec.clusterIPs) ? s.spec.clusterIPs : [])];
  return [...new Set(all.filter((a): a is string => typeof a === 'string' && isIP(a) !== 0 && !a.includes('%')))];
}

export function buildService(s: KService, o: MeshOptions): Service | undefined {
  return {
    name: s.metadata.name,
    namespace: s.metadata.namespace ?? 'default',
    hostname: serviceHostname(s, o),
    addresses: serviceAddresses(s),
    ports: s.spec.ports.map((p) => ({ servicePort: p.port, targetPort: typeof p.targetPort === 'number' ? p.targetPort : p.targetPort === undefined ? p.port : 0 })),
    subjectAltNames: [],
  };
}

export const isPod = (o: KObject): o is Pod => o.kind === 'Pod';
export const isService = (o: KObject): o is KService => o.kind === 'Service';
