// Hosts the mesh can route to, each with its ports and, per port, the ready endpoints (address,
// resolved target port, labels for subsets). Kubernetes Services select pods; ServiceEntries give
// endpoints inline or select pods too. Pods are indexed by label once, so selecting is a lookup of
// the smallest matching posting list rather than a scan of every pod for every service.
// Part of the traffic model (traffic-model.ts): what exists to route to, not how Envoy spells it,
// so it lives here rather than beside the Envoy builders.
import type { KObject, Pod, Service as KService } from '../../../kube/objects.ts';
import { serviceEntryPortProtocol, servicePortProtocol, type PortProtocol } from './protocol.ts';
import type { ServiceEntryModel } from './service-entry.ts';
import { isPod, isService, serviceHostname, targetPortFor, type MeshOptions } from './workloads.ts';

export interface MeshEndpoint {
  address: string;
  port: number;
  labels: Record<string, string>;
}

export interface MeshService {
  host: string;
  namespace: string;
  ports: number[];
  /** service port -> endpoints */
  endpoints: Map<number, MeshEndpoint[]>;
  /** DNS ServiceEntry: the name (and port) a LOGICAL_DNS cluster resolves instead of EDS. */
  dns?: { address: string; ports: Map<number, number> };
  /** service port -> its declared protocol (absent: `auto`) */
  protocols?: Map<number, PortProtocol>;
  /** The object that declares the host: what policies name in their targetRefs. */
  owner?: { kind: 'Service' | 'ServiceEntry'; name: string };
}

const isReady = (p: Pod) => !!p.status?.podIP && (p.status.phase === undefined || p.status.phase === 'Running') && !!p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

class PodIndex {
  private readonly byLabel = new Map<string, Pod[]>();

  constructor(pods: readonly Pod[]) {
    for (const p of pods) {
      if (!isReady(p)) continue;
      for (const [k, v] of Object.entries(p.metadata.labels ?? {})) {
        const key = `${p.metadata.namespace ?? 'default'}\0${k}\0${v}`;
        const list = this.byLabel.get(key);
        if (list) list.push(p);
        else this.byLabel.set(key, [p]);
      }
    }
  }

  /** Ready pods in `ns` carrying every label of a non-empty selector. */
  select(ns: string, selector: Record<string, string> | undefined): Pod[] {
    const entries = Object.entries(selector ?? {});
    if (!entries.length) return [];
    let smallest: Pod[] | undefined;
    for (const [k, v] of entries) {
      const list = this.byLabel.get(`${ns}\0${k}\0${v}`);
      if (!list) return [];
      if (!smallest || list.length < smallest.length) smallest = list;
    }
    return smallest!.filter((p) => entries.every(([k, v]) => p.metadata.labels?.[k] === v));
  }
}

export function indexServices(objects: readonly KObject[], entries: ServiceEntryModel[], o: MeshOptions): Map<string, MeshService> {
  const services = objects.filter(isService);
  const out = new Map<string, MeshService>();
  for (const s of meshServices(objects.filter(isPod), services, ownedEntries(services, entries, o), o)) out.set(s.host, s);
  return out;
}

/**
 * Which ServiceEntry serves each host: a Kubernetes Service of the same name wins, as in Istio,
 * then the first entry naming the host. Returns the (entry, hosts it owns) pairs.
 */
export function ownedEntries(services: readonly KService[], entries: readonly ServiceEntryModel[], o: MeshOptions): { entry: ServiceEntryModel; hosts: string[] }[] {
  const taken = new Set(services.map((s) => serviceHostname(s, o)));
  return entries.map((entry) => ({
    entry,
    // A passthrough entry (resolution NONE) has nothing a client could balance over: no host of its own.
    hosts: entry.resolution === 'NONE' ? [] : entry.hosts.filter((h) => {
      if (taken.has(h)) return false;
      taken.add(h);
      return true;
    }),
  }));
}

/** The hosts of some Services and ServiceEntries, with endpoints from `pods` (which may be one namespace's). */
export function meshServices(pods: readonly Pod[], services: readonly KService[], entries: readonly { entry: ServiceEntryModel; hosts: string[] }[], o: MeshOptions): MeshService[] {
  const index = new PodIndex(pods);
  const out: MeshService[] = [];
  for (const s of services) {
    const ns = s.metadata.namespace ?? 'default';
    const selected = index.select(ns, s.spec.selector);
    const endpoints = new Map<number, MeshEndpoint[]>();
    for (const port of s.spec.ports) endpoints.set(port.port, podEndpoints(selected, port));
    const protocols = new Map(s.spec.ports.map((p) => [p.port, servicePortProtocol(p)]));
    out.push({ host: serviceHostname(s, o), namespace: ns, ports: s.spec.ports.map((p) => p.port), endpoints, protocols, owner: { kind: 'Service', name: s.metadata.name } });
  }
  for (const { entry, hosts } of entries) {
    const svc = hosts.length ? serviceEntryService(entry, index) : undefined;
    if (svc) for (const host of hosts) out.push({ ...svc, host, owner: { kind: 'ServiceEntry', name: entry.source.split('/').pop()! } });
  }
  return out;
}

function podEndpoints(pods: Pod[], port: KService['spec']['ports'][number]): MeshEndpoint[] {
  const seen = new Set<string>();
  const out: MeshEndpoint[] = [];
  for (const p of pods) {
    const target = targetPortFor(p, port);
    const address = p.status!.podIP!;
    // Two pods on one address and port would be one endpoint; clients reject duplicates.
    if (target === undefined || seen.has(`${address}:${target}`)) continue;
    seen.add(`${address}:${target}`);
    out.push({ address, port: target, labels: p.metadata.labels ?? {} });
  }
  return out;
}

function serviceEntryService(e: ServiceEntryModel, pods: PodIndex): Omit<MeshService, 'host'> | undefined {
  if (e.resolution === 'NONE') return undefined; // passthrough: nothing a client could balance over
  const endpoints = new Map<number, MeshEndpoint[]>();
  const protocols = new Map(e.ports.map((p) => [p.number, serviceEntryPortProtocol(p)]));
  if (e.resolution === 'DNS' || e.resolution === 'DNS_ROUND_ROBIN') {
    const address = e.endpoints[0]?.address ?? e.hosts[0]!;
    const ports = new Map(e.ports.map((p) => [p.number, e.endpoints[0]?.ports[p.name] ?? p.targetPort ?? p.number]));
    return { namespace: e.namespace, ports: e.ports.map((p) => p.number), endpoints, dns: { address, ports }, protocols };
  }
  for (const p of e.ports) {
    const list = e.selector
      ? pods.select(e.namespace, e.selector).map((pod) => ({ address: pod.status!.podIP!, port: p.targetPort ?? p.number, labels: pod.metadata.labels ?? {} }))
      : e.endpoints.map((ep) => ({ address: ep.address, port: ep.ports[p.name] ?? p.targetPort ?? p.number, labels: ep.labels }));
    endpoints.set(p.number, list);
  }
  return { namespace: e.namespace, ports: e.ports.map((p) => p.number), endpoints, protocols };
}
