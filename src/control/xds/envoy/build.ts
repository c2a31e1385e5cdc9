// The traffic model (src/control/model/networking/traffic-model.ts) -> every Envoy resource
// proxyless gRPC clients (and later waypoints) need: per service port a Listener and
// RouteConfiguration; per cluster of the port (the whole service, each DestinationRule subset) a
// Cluster and, unless the client resolves it by DNS, its ClusterLoadAssignment.
//
// The model is kept per namespace and a namespace nothing changed in is the same object, so only
// changed namespaces are translated again; the others keep their encoded resources (the same
// objects), which is how the publisher finds what to send. `buildEnvoyResources` is the one-shot form.
import type { KObject } from '../../../kube/objects.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import { TrafficModelBuilder, type NsTraffic } from '../../model/networking/traffic-model.ts';
import type { MeshOptions } from '../../model/networking/workloads.ts';
import { isHttp2 } from '../../model/networking/protocol.ts';
import { ConfigSnapshot } from '../../config/config-store.ts';
import { GroupedResources } from '../grouped.ts';
import type { ResourceStore } from '../resources.ts';
import { buildCluster, buildLoadAssignment } from './clusters.ts';
import { buildListener } from './listeners.ts';
import { ENVOY_TYPES, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { buildRouteConfiguration } from './routes.ts';

export type TypedBodies = Map<string, Map<string, Uint8Array>>;

/** What one namespace contributes: its hosts' resources; the same object while unchanged. */
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

export class EnvoyBuilder {
  private readonly model: TrafficModelBuilder;
  /** The last build's translations, by the namespace model they came from. */
  private translated = new Map<NsTraffic, NsEnvoy>();

  constructor(o: MeshOptions) {
    this.model = new TrafficModelBuilder(o);
  }

  build(snap: ConfigSnapshot): EnvoyResources {
    const model = this.model.build(snap);
    const translated = new Map<NsTraffic, NsEnvoy>();
    const namespaces = new Map<string, NsEnvoy>();
    for (const [ns, m] of model.namespaces) {
      const e = this.translated.get(m) ?? translateNamespace(m);
      translated.set(m, e);
      namespaces.set(ns, e);
    }
    this.translated = translated;
    return envoyResources(namespaces, model.routingProblems);
  }
}

/** One namespace's model as Envoy resources: per port the listener, its routes and its clusters. */
function translateNamespace(m: NsTraffic): NsEnvoy {
  const resources: TypedBodies = new Map();
  const put = (t: string, name: string, body: Uint8Array) => {
    let r = resources.get(t);
    if (!r) resources.set(t, (r = new Map()));
    r.set(name, body);
  };
  for (const p of m.ports) {
    const name = listenerName(p.host, p.port);
    put(TYPE_LISTENER, name, buildListener(p.host, p.port, p.protocol));
    put(TYPE_ROUTE, name, buildRouteConfiguration(p.host, p.port, p.routes));
    for (const c of p.clusters) {
      const cluster = clusterName(c.host, c.port, c.subset);
      put(TYPE_CLUSTER, cluster, buildCluster(cluster, c.policy, c.dns, isHttp2(p.protocol)));
      if (!c.dns) put(TYPE_ENDPOINT, cluster, buildLoadAssignment(cluster, c.endpoints));
    }
  }
  return { resources, problems: m.problems };
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
