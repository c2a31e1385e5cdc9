// Kubernetes objects -> every Envoy resource proxyless gRPC clients (and later waypoints) need:
// per service port a Listener and RouteConfiguration; per service port and DestinationRule subset
// a Cluster and its ClusterLoadAssignment.
//
// The builder works per namespace and keeps each namespace's output: a Service selects pods of
// its own namespace only, so a pod change rebuilds its namespace's hosts and nothing else. Routing
// objects (VirtualService, DestinationRule, ServiceEntry, HTTPRoute, GRPCRoute) can name hosts
// anywhere, and routes check the ports of other hosts, so a change to one of them, or to the set
// of Services, rebuilds everything. `buildEnvoyResources` is the one-shot form.
import { keyOf, type KObject, type Pod, type Service as KService } from '../../../lab/objects.ts';
import type { NetworkingProblem } from '../../model/networking-common.ts';
import { NETWORKING_KINDS, parseNetworking, type NetworkingConfig } from '../../model/networking-config.ts';
import type { ServiceEntryModel } from '../../model/networking-service-entry.ts';
import { isPod, isService, serviceHostname, type MeshOptions } from '../../model/workloads.ts';
import type { ResourceStore } from '../resources.ts';
import { buildCluster, buildLoadAssignment } from './clusters.ts';
import { buildListener } from './listeners.ts';
import { ENVOY_TYPES, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { buildRouteConfiguration } from './routes.ts';
import { meshServices, ownedEntries, type MeshEndpoint, type MeshService } from './services.ts';

export interface EnvoyResources {
  /** type URL -> resource name -> encoded resource */
  resources: Map<string, Map<string, Uint8Array>>;
  problems: NetworkingProblem[];
}

/** What one namespace contributes: its hosts and their resources. */
interface NsOutput {
  inputs: KObject[];
  services: MeshService[];
  resources: Map<string, Map<string, Uint8Array>>;
  problems: NetworkingProblem[];
}

interface NsInputs {
  pods: Pod[];
  services: KService[];
  /** pods and services in object order: the namespace is unchanged when these are the same objects */
  all: KObject[];
}

const matches = (labels: Record<string, string>, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels[k] === v);
const sameList = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const problemAt = (problems: NetworkingProblem[], source: string, field: string, reason: string) => {
  const [kind, namespace, name] = source.split('/');
  problems.push({ kind: kind!, namespace: namespace!, name: name!, field, reason });
};

export class EnvoyBuilder {
  private netObjects: KObject[] = [];
  private serviceKeys = '';
  private net?: NetworkingConfig;
  private entriesByNs = new Map<string, { entry: ServiceEntryModel; hosts: string[] }[]>();
  private globalProblems: NetworkingProblem[] = [];
  private out = new Map<string, NsOutput>();

  constructor(private readonly o: MeshOptions) {}

  build(objects: readonly KObject[]): EnvoyResources {
    const netObjects: KObject[] = [];
    const services: KService[] = [];
    const byNs = new Map<string, NsInputs>();
    const nsOf = (ns: string) => {
      let e = byNs.get(ns);
      if (!e) byNs.set(ns, (e = { pods: [], services: [], all: [] }));
      return e;
    };
    for (const obj of objects) {
      if (isPod(obj)) {
        const e = nsOf(obj.metadata.namespace ?? 'default');
        e.pods.push(obj);
        e.all.push(obj);
      } else if (isService(obj)) {
        const e = nsOf(obj.metadata.namespace ?? 'default');
        e.services.push(obj);
        e.all.push(obj);
        services.push(obj);
      } else if (NETWORKING_KINDS.has(obj.kind)) netObjects.push(obj);
    }
    const serviceKeys = services.map(keyOf).join('\n');
    const full = !this.net || !sameList(this.netObjects, netObjects) || serviceKeys !== this.serviceKeys;
    if (full) this.rebuildRouting(netObjects, services, serviceKeys);
    const net = this.net!;

    // Hosts of other namespaces as last built: routes look up their ports.
    const hosts = new Map<string, MeshService>();
    const namespaces = new Set([...byNs.keys(), ...this.entriesByNs.keys()]);
    const dirty: string[] = [];
    const next = new Map<string, NsOutput>();
    for (const ns of namespaces) {
      const prev = this.out.get(ns);
      const inputs = byNs.get(ns)?.all ?? [];
      if (!full && prev && sameList(prev.inputs, inputs)) {
        next.set(ns, prev);
        for (const s of prev.services) hosts.set(s.host, s);
      } else dirty.push(ns);
    }
    for (const ns of dirty) {
      const inputs = byNs.get(ns) ?? { pods: [], services: [], all: [] };
      const svcs = meshServices(inputs.pods, inputs.services, this.entriesByNs.get(ns) ?? [], this.o);
      for (const s of svcs) hosts.set(s.host, s);
      next.set(ns, { inputs: inputs.all, services: svcs, resources: new Map(), problems: [] });
    }
    for (const ns of dirty) {
      const e = next.get(ns)!;
      for (const svc of e.services) this.buildHost(svc, net, hosts, e);
    }
    this.out = next;

    const resources = new Map<string, Map<string, Uint8Array>>(ENVOY_TYPES.map((t) => [t, new Map()]));
    const problems = [...this.globalProblems];
    for (const e of next.values()) {
      for (const [t, m] of e.resources) {
        const all = resources.get(t)!;
        for (const [name, body] of m) all.set(name, body);
      }
      problems.push(...e.problems);
    }
    return { resources, problems };
  }

  /** Routing objects or the set of Services changed: parse routing again, and every namespace is rebuilt. */
  private rebuildRouting(netObjects: KObject[], services: KService[], serviceKeys: string): void {
    const net = parseNetworking(netObjects, this.o);
    this.net = net;
    this.netObjects = netObjects;
    this.serviceKeys = serviceKeys;
    this.entriesByNs = new Map();
    const owned = ownedEntries(services, net.serviceEntries, this.o);
    for (const e of owned) {
      const list = this.entriesByNs.get(e.entry.namespace);
      if (list) list.push(e);
      else this.entriesByNs.set(e.entry.namespace, [e]);
    }
    // Configuration for hosts that do not exist is kept (the host may appear later) but reported.
    const known = new Set<string>();
    for (const s of services) known.add(serviceHostname(s, this.o));
    for (const e of owned) for (const h of e.hosts) known.add(h);
    this.globalProblems = [...net.problems];
    for (const [host, tables] of net.routes) if (!known.has(host)) for (const t of tables) problemAt(this.globalProblems, t.source, 'spec', `host ${host} is not a known Service or ServiceEntry`);
    for (const [host, dr] of net.destinationRules) if (!known.has(host)) problemAt(this.globalProblems, dr.source, 'spec.host', `host ${host} is not a known Service or ServiceEntry`);
  }

  private buildHost(svc: MeshService, net: NetworkingConfig, hosts: ReadonlyMap<string, MeshService>, out: NsOutput): void {
    const put = (t: string, name: string, body: Uint8Array) => {
      let m = out.resources.get(t);
      if (!m) out.resources.set(t, (m = new Map()));
      m.set(name, body);
    };
    const ctx = { services: hosts, problem: (source: string, reason: string) => problemAt(out.problems, source, 'spec', reason) };
    const dr = net.destinationRules.get(svc.host);
    const tables = net.routes.get(svc.host) ?? [];
    for (const port of svc.ports) {
      const name = listenerName(svc.host, port);
      put(TYPE_LISTENER, name, buildListener(svc.host, port));
      put(TYPE_ROUTE, name, buildRouteConfiguration(svc.host, port, tables, ctx));
      const eps: MeshEndpoint[] = svc.endpoints.get(port) ?? [];
      const dns = svc.dns ? { address: svc.dns.address, port: svc.dns.ports.get(port) ?? port } : undefined;
      const base = clusterName(svc.host, port);
      put(TYPE_CLUSTER, base, buildCluster(base, dr?.policy ?? {}, dns));
      if (!dns) put(TYPE_ENDPOINT, base, buildLoadAssignment(base, eps));
      for (const s of dr?.subsets ?? []) {
        const sub = clusterName(svc.host, port, s.name);
        put(TYPE_CLUSTER, sub, buildCluster(sub, s.policy, dns));
        if (!dns) put(TYPE_ENDPOINT, sub, buildLoadAssignment(sub, eps.filter((e) => matches(e.labels, s.labels))));
      }
    }
  }
}

export function buildEnvoyResources(objects: readonly KObject[], o: MeshOptions): EnvoyResources {
  return new EnvoyBuilder(o).build(objects);
}

/** Replaces the Envoy types in the store, clusters first so no route names a cluster a client lacks. */
export function publishEnvoyResources(store: ResourceStore, built: EnvoyResources): void {
  for (const t of ENVOY_TYPES) store.replace(t, built.resources.get(t) ?? new Map());
}
