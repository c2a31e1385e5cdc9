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
import { GroupedResources } from '../grouped.ts';
import type { ResourceStore } from '../resources.ts';
import { buildCluster, buildLoadAssignment } from './clusters.ts';
import { buildGatewayListener, buildListener } from './listeners.ts';
import { attachableLists, attachmentsOf, EMPTY_ATTACHMENTS, type Attachments } from '../../model/security/attachments.ts';
import { meshConfigOf, type MeshConfig } from '../../model/mesh-config.ts';
import { gatewayListenerName, listenerExtras, NO_EXTRAS, type AttachContext } from './listener-extras.ts';
import { ConfigSnapshot, ofKind, type NsObjects } from '../../config/config-store.ts';
import { WAYPOINT_CLASS } from '../../../kube/waypoint.ts';
import { hasWideTelemetry } from './telemetry.ts';
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

/** What a namespace's translation was made from: reused while every part is the same object. */
interface NsInputs {
  traffic: NsTraffic | undefined;
  attached: Attachments;
  mesh: MeshConfig;
  /** Root-namespace objects contributors may read (mesh-wide Telemetry): compared by their attachable lists. */
  root: NsObjects | undefined;
  rootLists: readonly (readonly unknown[])[];
  /** The mesh's service hosts and ports, when the namespace has RequestAuthentications (jwksUri names one). */
  knownHosts?: ReadonlyMap<string, readonly number[]>;
}

export class EnvoyBuilder {
  private readonly model: TrafficModelBuilder;
  /** The last build's translations, by namespace, with what they were made from. */
  private translated = new Map<string, { inputs: NsInputs; lists: readonly (readonly unknown[])[]; out: NsEnvoy }>();
  /** The last build's service hosts (with their key), the same object while no host or port changed. */
  private hosts?: { key: string; map: ReadonlyMap<string, readonly number[]> };

  constructor(private readonly o: MeshOptions) {
    this.model = new TrafficModelBuilder(o);
  }

  build(snap: ConfigSnapshot): EnvoyResources {
    const model = this.model.build(snap);
    const mesh = meshConfigOf(snap, this.o.rootNamespace);
    const root = snap.namespaces.get(this.o.rootNamespace);
    const rootLists = attachableLists(root);
    const translated = new Map<string, { inputs: NsInputs; lists: readonly (readonly unknown[])[]; out: NsEnvoy }>();
    const namespaces = new Map<string, NsEnvoy>();
    // Only namespaces with RequestAuthentications read the hosts; computed when one has any.
    let hostsNow: ReadonlyMap<string, readonly number[]> | undefined;
    const knownHosts = () => (hostsNow ??= (this.hosts = sameHosts(this.hosts, model.namespaces.values())).map);
    const all = new Set([...model.namespaces.keys(), ...snap.namespaces.keys()]);
    all.delete('');
    for (const ns of all) {
      const g = snap.namespaces.get(ns);
      const lists = attachableLists(g);
      const prev = this.translated.get(ns);
      const attached = prev && sameLists(prev.lists, lists) ? prev.inputs.attached : attachmentsOf(lists);
      const inputs: NsInputs = {
        traffic: model.namespaces.get(ns), attached, mesh, root: prev && sameLists(prev.inputs.rootLists, rootLists) ? prev.inputs.root : root, rootLists,
        ...(ofKind(g, 'RequestAuthentication').length && { knownHosts: knownHosts() }),
      };
      const same = prev && prev.inputs.traffic === inputs.traffic && prev.inputs.attached === attached && prev.inputs.mesh === mesh && prev.inputs.root === inputs.root && prev.inputs.knownHosts === inputs.knownHosts;
      const out = same ? prev.out : translateNamespace(ns, inputs, g, this.o);
      if (!inputs.traffic && !out.resources.size && !out.problems.length) continue;
      translated.set(ns, { inputs, lists, out });
      namespaces.set(ns, out);
    }
    this.translated = translated;
    return envoyResources(namespaces, [...model.routingProblems, ...mesh.problems]);
  }
}

/** The service hosts and ports of the model; the previous map while nothing in it changed. */
function sameHosts(prev: { key: string; map: ReadonlyMap<string, readonly number[]> } | undefined, namespaces: Iterable<NsTraffic>): { key: string; map: ReadonlyMap<string, readonly number[]> } {
  const map = new Map<string, number[]>();
  for (const t of namespaces) for (const h of t.hosts) map.set(h.host, [...h.ports].sort((a, b) => a - b));
  const key = [...map].map(([h, p]) => `${h}:${p.join(',')}`).sort().join(' ');
  return prev && prev.key === key ? prev : { key, map };
}

const sameLists = (a: readonly (readonly unknown[])[], b: readonly (readonly unknown[])[]) => a.length === b.length && a.every((l, i) => l === b[i]);

/**
 * One namespace as Envoy resources: per port the listener (with what is attached to its Service or
 * ServiceEntry), its routes and its clusters; per Gateway something targets, the waypoint's own listener.
 */
function translateNamespace(ns: string, inputs: NsInputs, objects: NsObjects | undefined, o: MeshOptions): NsEnvoy {
  const m = inputs.traffic ?? { hosts: [], ports: [], problems: [] };
  const resources: TypedBodies = new Map();
  const put = (t: string, name: string, body: Uint8Array) => {
    let r = resources.get(t);
    if (!r) resources.set(t, (r = new Map()));
    r.set(name, body);
  };
  const problems = [...m.problems, ...inputs.attached.problems];
  const ctx = (target: AttachContext['target'], port?: AttachContext['port']): AttachContext => ({
    namespace: ns, target, ...(port && { port }), mesh: inputs.mesh, objects, rootObjects: inputs.root, trustDomain: o.trustDomain, rootNamespace: o.rootNamespace, problems,
    ...(inputs.knownHosts && { knownHosts: inputs.knownHosts }),
  });
  const attached = inputs.attached === EMPTY_ATTACHMENTS ? undefined : inputs.attached;
  for (const [key, objs] of attached?.byTarget ?? []) {
    const [kind, name] = [key.slice(0, key.indexOf('/')), key.slice(key.indexOf('/') + 1)];
    if (kind !== 'Gateway') continue;
    if (!ofKind(objects, 'Gateway').some((g) => g.metadata.name === name))
      for (const obj of objs) problems.push({ kind: obj.kind, namespace: ns, name: obj.metadata.name, field: 'spec.targetRefs', reason: `Gateway ${ns}/${name} does not exist (yet): attached when it does` });
    put(TYPE_LISTENER, gatewayListenerName(ns, name), buildGatewayListener(ns, name, listenerExtras(objs, ctx({ kind: 'Gateway', name }))));
  }
  // Mesh- and namespace-wide Telemetry reach every waypoint of the namespace through its own Listener.
  if (hasWideTelemetry(ns, objects, inputs.root, o.rootNamespace, inputs.mesh))
    for (const gw of ofKind(objects, 'Gateway')) {
      const name = gw.metadata.name;
      if ((gw as { spec?: { gatewayClassName?: string } }).spec?.gatewayClassName !== WAYPOINT_CLASS || resources.get(TYPE_LISTENER)?.has(gatewayListenerName(ns, name))) continue;
      const extras = listenerExtras([], ctx({ kind: 'Gateway', name }));
      if (extras.tracing || extras.accessLog || extras.httpFilters.length || extras.networkFilters.length) put(TYPE_LISTENER, gatewayListenerName(ns, name), buildGatewayListener(ns, name, extras));
    }
  for (const p of m.ports) {
    const name = listenerName(p.host, p.port);
    const objs = p.owner && attached?.byTarget.get(`${p.owner.kind}/${p.owner.name}`);
    const extras = objs ? listenerExtras(objs, ctx(p.owner!, { host: p.host, port: p.port, protocol: p.protocol })) : NO_EXTRAS;
    put(TYPE_LISTENER, name, buildListener(p.host, p.port, p.protocol, extras));
    put(TYPE_ROUTE, name, buildRouteConfiguration(p.host, p.port, p.routes));
    for (const c of p.clusters) {
      const cluster = clusterName(c.host, c.port, c.subset);
      put(TYPE_CLUSTER, cluster, buildCluster(cluster, c.policy, c.dns, isHttp2(p.protocol)));
      if (!c.dns) put(TYPE_ENDPOINT, cluster, buildLoadAssignment(cluster, c.endpoints));
    }
  }
  return { resources, problems };
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
