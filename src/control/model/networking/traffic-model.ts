// The L7 traffic model from the configuration objects: every host (Service or ServiceEntry) and,
// per host port, its routes and the clusters they can send to (the whole service and each
// DestinationRule subset, with policy and endpoints or the DNS name to resolve). Plain data, what
// proxyless gRPC clients (and later waypoints) need; src/control/xds/envoy translates it into Envoy
// resources.
//
// The builder works per namespace and keeps each namespace's model: a Service selects pods of its
// own namespace only, so a pod change rebuilds its namespace's hosts and nothing else, and a
// namespace nothing changed in is the same object. Routing objects (VirtualService,
// DestinationRule, ServiceEntry, HTTPRoute, GRPCRoute, BackendTrafficPolicy) can name hosts anywhere, and routes check
// the ports of other hosts, so a change to one of them, or to the set of Services, rebuilds
// everything. `buildTrafficModel` is the one-shot form.
import { keyOf, type KObject, type Pod, type Service as KService } from '../../../kube/objects.ts';
import { ConfigSnapshot, ofKind } from '../../config/config-store.ts';
import type { NetworkingProblem } from './common.ts';
import { NETWORKING_KINDS, parseNetworking, type NetworkingConfig } from './config.ts';
import { policyFor, type DestinationPolicy, type TrafficPolicy } from './destination-rule.ts';
import { portRoutes, type ClusterRef, type PortRoute } from './port-routes.ts';
import type { PortProtocol } from './protocol.ts';
import type { ServiceEntryModel } from './service-entry.ts';
import { meshServices, ownedEntries, type MeshEndpoint, type MeshService } from './services.ts';
import { serviceHostname, type MeshOptions } from './workloads.ts';

/** One cluster: its policy and either the endpoints to balance over or, for DNS hosts, the name to resolve. */
export interface TrafficCluster extends ClusterRef {
  policy: TrafficPolicy;
  /** DNS ServiceEntry: resolved by the client (no endpoints are listed). */
  dns?: { address: string; port: number };
  endpoints: MeshEndpoint[];
}

/** What a client of `host:port` needs: the routes, then every cluster of the port. */
export interface PortTraffic {
  host: string;
  port: number;
  /** As the Service declares it (appProtocol or port name); `auto` when it does not. */
  protocol: PortProtocol;
  routes: PortRoute[];
  /** The whole service first, then one per DestinationRule subset. */
  clusters: TrafficCluster[];
  /** The Service or ServiceEntry declaring the host (what policies' targetRefs name). */
  owner?: MeshService['owner'];
  namespace: string;
}

/** What one namespace contributes; the same object while nothing it was built from changed. */
export interface NsTraffic {
  hosts: readonly MeshService[];
  /** Every port of every host, host by host. */
  ports: readonly PortTraffic[];
  /** Destinations its routes could not resolve. */
  problems: NetworkingProblem[];
}

export interface TrafficModel {
  /** By namespace: consumers compare these by identity to find what changed. */
  namespaces: ReadonlyMap<string, NsTraffic>;
  /** Problems of the routing objects themselves: invalid fields, conflicts, unknown hosts. */
  routingProblems: NetworkingProblem[];
}

interface NsBuilt {
  pods: readonly Pod[];
  services: readonly KService[];
  model: NsTraffic;
}

const matches = (labels: Record<string, string>, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels[k] === v);
const sameList = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const problemAt = (problems: NetworkingProblem[], source: string, field: string, reason: string) => {
  const [kind, namespace, name] = source.split('/');
  problems.push({ kind: kind!, namespace: namespace!, name: name!, field, reason });
};

export class TrafficModelBuilder {
  /** Each namespace's routing objects, kind by kind: any new list means routing is parsed again. */
  private netLists: (readonly KObject[])[] = [];
  /** Each namespace's Services, and their keys: a change to the set of Services rebuilds everything. */
  private serviceLists = new Map<string, { list: readonly KService[]; keys: string }>();
  private net?: NetworkingConfig;
  private entriesByNs = new Map<string, { entry: ServiceEntryModel; hosts: string[] }[]>();
  private routingProblems: NetworkingProblem[] = [];
  private built = new Map<string, NsBuilt>();

  constructor(private readonly o: MeshOptions) {}

  build(snap: ConfigSnapshot): TrafficModel {
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
    const next = new Map<string, NsBuilt>();
    for (const ns of namespaces) {
      const prev = this.built.get(ns);
      const g = snap.namespaces.get(ns);
      if (!full && prev && prev.pods === ofKind(g, 'Pod') && prev.services === ofKind(g, 'Service')) {
        next.set(ns, prev);
        for (const s of prev.model.hosts) hosts.set(s.host, s);
      } else dirty.push(ns);
    }
    const rebuilt: { ns: string; pods: readonly Pod[]; services: readonly KService[]; hosts: MeshService[] }[] = [];
    for (const ns of dirty) {
      const g = snap.namespaces.get(ns);
      const pods = ofKind<Pod>(g, 'Pod');
      const services = ofKind<KService>(g, 'Service');
      const svcs = meshServices(pods, services, this.entriesByNs.get(ns) ?? [], this.o);
      for (const s of svcs) hosts.set(s.host, s);
      rebuilt.push({ ns, pods, services, hosts: svcs });
    }
    for (const { ns, pods, services, hosts: own } of rebuilt) next.set(ns, { pods, services, model: this.buildNamespace(own, net, hosts) });
    this.built = next;
    return { namespaces: new Map([...next].map(([ns, b]) => [ns, b.model])), routingProblems: this.routingProblems };
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
    this.routingProblems = [...net.problems];
    for (const [host, tables] of net.routes) if (!known.has(host)) for (const t of tables) problemAt(this.routingProblems, t.source, 'spec', `host ${host} is not a known Service or ServiceEntry`);
    for (const [host, dr] of net.destinationRules) if (!known.has(host)) problemAt(this.routingProblems, dr.source, 'spec.host', `host ${host} is not a known Service or ServiceEntry`);
    const routeSources = new Set([...net.routes.values()].flatMap((ts) => ts.map((t) => t.source)));
    for (const [target, p] of net.rateLimits.byRoute) if (!routeSources.has(target)) problemAt(this.routingProblems, p.source, 'spec.targetRefs', `${target.replace('/', ' ').replace('/', '/')} is not a known route with a Service parent: the limit applies to nothing`);
    for (const [host, p] of net.rateLimits.byHost) if (!known.has(host)) problemAt(this.routingProblems, p.source, 'spec.targetRefs', `Service ${host} is not known: the limit applies to nothing yet`);
  }

  private buildNamespace(own: MeshService[], net: NetworkingConfig, hosts: ReadonlyMap<string, MeshService>): NsTraffic {
    const problems: NetworkingProblem[] = [];
    const ctx = {
      services: hosts,
      problem: (source: string, reason: string) => problemAt(problems, source, 'spec', reason),
      rateLimit: (source: string, host: string) => net.rateLimits.byRoute.get(source) ?? net.rateLimits.byHost.get(host),
    };
    const ports: PortTraffic[] = [];
    for (const svc of own) {
      const dr = net.destinationRules.get(svc.host);
      const tables = net.routes.get(svc.host) ?? [];
      for (const port of svc.ports) ports.push({ host: svc.host, namespace: svc.namespace, ...(svc.owner && { owner: svc.owner }), port, protocol: svc.protocols?.get(port) ?? 'auto', routes: withHashes(portRoutes(svc.host, port, tables, ctx), net), clusters: portClusters(svc, port, dr) });
    }
    return { hosts: own, ports, problems };
  }
}

/**
 * Routes to consistent-hash clusters carry what to hash (Envoy's route hash_policy): the key of the
 * first of their clusters that hashes, as Istio takes one hash policy per route.
 */
function withHashes(routes: PortRoute[], net: NetworkingConfig): PortRoute[] {
  return routes.map((r) => {
    for (const c of r.action.clusters) {
      const key = policyFor(net.destinationRules.get(c.host), c.port, c.subset).hash?.key;
      if (key) return { ...r, action: { ...r.action, hash: key } };
    }
    return r;
  });
}

/** The clusters of one service port: the whole service, then each subset with the endpoints its labels select. */
export function portClusters(svc: MeshService, port: number, dr: DestinationPolicy | undefined): TrafficCluster[] {
  const eps = svc.endpoints.get(port) ?? [];
  const dns = svc.dns ? { address: svc.dns.address, port: svc.dns.ports.get(port) ?? port } : undefined;
  const cluster = (policy: TrafficPolicy, endpoints: MeshEndpoint[], subset?: string): TrafficCluster => ({ host: svc.host, port, subset, policy, dns, endpoints });
  return [cluster(policyFor(dr, port), eps), ...(dr?.subsets ?? []).map((s) => cluster(policyFor(dr, port, s.name), eps.filter((e) => matches(e.labels, s.labels)), s.name))];
}

export function buildTrafficModel(objects: readonly KObject[], o: MeshOptions): TrafficModel {
  return new TrafficModelBuilder(o).build(ConfigSnapshot.of(objects));
}
