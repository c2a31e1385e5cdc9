// Kubernetes objects -> every Envoy resource proxyless gRPC clients (and later waypoints) need:
// per service port a Listener and RouteConfiguration; per service port and DestinationRule subset
// a Cluster and its ClusterLoadAssignment.
//
// The builder works per namespace and keeps each namespace's output: a Service selects pods of
// its own namespace only, so a pod change rebuilds its namespace's hosts and nothing else. Routing
// objects (VirtualService, DestinationRule, ServiceEntry, HTTPRoute, GRPCRoute) can name hosts
// anywhere, and routes check the ports of other hosts, so a change to one of them, or to the set
// of Services, rebuilds everything. `buildEnvoyResources` is the one-shot form.
import { keyOf, type KObject, type Pod, type Service as KService } from '../../../kube/objects.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import { NETWORKING_KINDS, parseNetworking, type NetworkingConfig } from '../../model/networking/config.ts';
import type { ServiceEntryModel } from '../../model/networking/service-entry.ts';
import { serviceHostname, type MeshOptions } from '../../model/networking/workloads.ts';
import { ConfigSnapshot, ofKind } from '../../config/config-store.ts';
import { GroupedResources } from '../grouped.ts';
import type { ResourceStore } from '../resources.ts';
import { buildCluster, buildLoadAssignment } from './clusters.ts';
import { buildListener } from './listeners.ts';
import { ENVOY_TYPES, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { buildRouteConfiguration } from './routes.ts';
import { meshServices, ownedEntries, type MeshEndpoint, type MeshService } from './services.ts';

export type TypedBodies = Map<string, Map<string, Uint8Array>>;

/** What one namespace contributes: its hosts and their resources; the same object while unchanged. */
export interface NsEnvoy {
  /** type URL -> resource name -> encoded resource */
  resources: TypedBodies;
  problems: NetworkingProblem[];
}

export interface EnvoyResources {
  namespaces: ReadonlyMap<string, NsEnvoy>;
  /** Every resource by type, merged on first use. */
  readonly resources: TypedBodies;
  readonly problems: NetworkingProblem[];
}

interface NsOutput extends NsEnvoy {
  pods: readonly Pod[];
  services: readonly KService[];
  hosts: MeshService[];
}

const matches = (labels: Record<string, string>, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels[k] === v);
const sameList = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const problemAt = (problems: NetworkingProblem[], source: string, field: string, reason: string) => {
  const [kind, namespace, name] = source.split('/');
  problems.push({ kind: kind!, namespace: namespace!, name: name!, field, reason });
};

export class EnvoyBuilder {
  /** Each namespace's routing objects, kind by kind: any new list means routing is parsed again. */
  private netLists: (readonly KObject[])[] = [];
  /** Each namespace's Services, and their keys: a change to the set of Services rebuilds everything. */
  private serviceLists = new Map<string, { list: readonly KService[]; keys: string }>();
  private net?: NetworkingConfig;
  private entriesByNs = new Map<string, { entry: ServiceEntryModel; hosts: string[] }[]>();
  private globalProblems: NetworkingProblem[] = [];
  private out = new Map<string, NsOutput>();

  constructor(private readonly o: MeshOptions) {}

  build(snap: ConfigSnapshot): EnvoyResources {
    const netLists: (readonly KObject[])[] = [];
    for (const g of snap.namespaces.values())
      for (const kind of NETWORKING_KINDS) {
        const list = ofKind(g, kind);
        if (list.length) netLists.push(list);
      }
    const serviceLists = new Map<string, { list: readonly KService[]; keys: string }>();
    let servicesChanged = false;
    for (const [ns, g] of snap.namespaces) {
      const list = ofKind<KService>(g, 'Service');
      if (!list.length) continue;
      const prev = this.serviceLists.get(ns);
      const entry = prev?.list === list ? prev : { list, keys: list.map(keyOf).join('\n') };
      if (entry.keys !== prev?.keys) servicesChanged = true;
      serviceLists.set(ns, entry);
    }
    if (serviceLists.size !== this.serviceLists.size) servicesChanged = true;
    this.serviceLists = serviceLists;
    const full = !this.net || servicesChanged || !sameList(this.netLists, netLists);
    if (full) this.rebuildRouting(netLists.flat(), [...serviceLists.values()].flatMap((e) => e.list));
    this.netLists = netLists;
    const net = this.net!;

    // Hosts of other namespaces as last built: routes look up their ports.
    const hosts = new Map<string, MeshService>();
    const namespaces = new Set([...snap.namespaces.keys(), ...this.entriesByNs.keys()]);
    namespaces.delete('');
    const dirty: string[] = [];
    const next = new Map<string, NsOutput>();
    for (const ns of namespaces) {
      const prev = this.out.get(ns);
      const g = snap.namespaces.get(ns);
      if (!full && prev && prev.pods === ofKind(g, 'Pod') && prev.services === ofKind(g, 'Service')) {
        next.set(ns, prev);
        for (const s of prev.hosts) hosts.set(s.host, s);
      } else dirty.push(ns);
    }
    for (const ns of dirty) {
      const g = snap.namespaces.get(ns);
      const pods = ofKind<Pod>(g, 'Pod');
      const services = ofKind<KService>(g, 'Service');
      const svcs = meshServices(pods, services, this.entriesByNs.get(ns) ?? [], this.o);
      for (const s of svcs) hosts.set(s.host, s);
      next.set(ns, { pods, services, hosts: svcs, resources: new Map(), problems: [] });
    }
    for (const ns of dirty) {
      const e = next.get(ns)!;
      for (const svc of e.hosts) this.buildHost(svc, net, hosts, e);
    }
    this.out = next;
    return envoyResources(next, this.globalProblems);
  }

  /** Routing objects or the set of Services changed: parse routing again, and every namespace is rebuilt. */
  private rebuildRouting(netObjects: KObject[], services: KService[]): void {
    const net = parseNetworking(netObjects, this.o);
    this.net = net;
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

/** The resources over their namespaces; the merged views are built on first use. */
function envoyResources(namespaces: ReadonlyMap<string, NsEnvoy>, global: NetworkingProblem[]): EnvoyResources {
  let resources: TypedBodies | undefined;
  let problems: NetworkingProblem[] | undefined;
  return {
    namespaces,
    get resources() {
      if (!resources) {
        resources = new Map(ENVOY_TYPES.map((t) => [t, new Map()]));
        for (const e of namespaces.values())
          for (const [t, m] of e.resources) {
            const all = resources.get(t)!;
            for (const [name, body] of m) all.set(name, body);
          }
      }
      return resources;
    },
    get problems() {
      return (problems ??= [...global, ...[...namespaces.values()].flatMap((e) => e.problems)]);
    },
  };
}

export function buildEnvoyResources(objects: readonly KObject[], o: MeshOptions): EnvoyResources {
  return new EnvoyBuilder(o).build(ConfigSnapshot.of(objects));
}

/** Replaces the Envoy types in the store, clusters first so no route names a cluster a client lacks. */
export function publishEnvoyResources(store: ResourceStore, built: EnvoyResources): void {
  for (const t of ENVOY_TYPES) store.replace(t, built.resources.get(t) ?? new Map());
}

/** Publishes successive builds: only namespaces whose output changed are compared, type by type in warming order. */
export class EnvoyPublisher {
  private readonly types: GroupedResources[];
  private static readonly NONE = new Map<string, Uint8Array>();

  constructor(store: ResourceStore) {
    this.types = ENVOY_TYPES.map((t) => new GroupedResources(store, t));
  }

  publish(built: EnvoyResources): void {
    for (const type of this.types) {
      const groups = new Map<string, ReadonlyMap<string, Uint8Array>>();
      for (const [ns, e] of built.namespaces) groups.set(ns, e.resources.get(type.typeUrl) ?? EnvoyPublisher.NONE);
      type.publish(groups);
    }
  }
}
