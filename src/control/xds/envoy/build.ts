// Kubernetes objects -> every Envoy resource proxyless gRPC clients (and later waypoints) need:
// per service port a Listener and RouteConfiguration; per service port and DestinationRule subset
// a Cluster and its ClusterLoadAssignment. Work is per service port, with pods and routing indexed
// by host beforehand, so the cost grows with the number of objects, not their product.
import type { KObject } from '../../../lab/objects.ts';
import type { NetworkingProblem } from '../../model/networking-common.ts';
import { parseNetworking } from '../../model/networking-config.ts';
import type { MeshOptions } from '../../model/workloads.ts';
import type { ResourceStore } from '../resources.ts';
import { buildCluster, buildLoadAssignment } from './clusters.ts';
import { buildListener } from './listeners.ts';
import { ENVOY_TYPES, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { buildRouteConfiguration } from './routes.ts';
import { indexServices, type MeshEndpoint } from './services.ts';

export interface EnvoyResources {
  /** type URL -> resource name -> encoded resource */
  resources: Map<string, Map<string, Uint8Array>>;
  problems: NetworkingProblem[];
}

const matches = (labels: Record<string, string>, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels[k] === v);

export function buildEnvoyResources(objects: KObject[], o: MeshOptions): EnvoyResources {
  const net = parseNetworking(objects, o);
  const problems = net.problems;
  const problemAt = (source: string, field: string, reason: string) => {
    const [kind, namespace, name] = source.split('/');
    problems.push({ kind: kind!, namespace: namespace!, name: name!, field, reason });
  };
  const services = indexServices(objects, net.serviceEntries, o);
  const listeners = new Map<string, Uint8Array>();
  const routes = new Map<string, Uint8Array>();
  const clusters = new Map<string, Uint8Array>();
  const endpoints = new Map<string, Uint8Array>();
  const ctx = { services, problem: (source: string, reason: string) => problemAt(source, 'spec', reason) };

  for (const svc of services.values()) {
    const dr = net.destinationRules.get(svc.host);
    const tables = net.routes.get(svc.host) ?? [];
    for (const port of svc.ports) {
      const name = listenerName(svc.host, port);
      listeners.set(name, buildListener(svc.host, port));
      routes.set(name, buildRouteConfiguration(svc.host, port, tables, ctx));
      const eps: MeshEndpoint[] = svc.endpoints.get(port) ?? [];
      const dns = svc.dns ? { address: svc.dns.address, port: svc.dns.ports.get(port) ?? port } : undefined;
      const base = clusterName(svc.host, port);
      clusters.set(base, buildCluster(base, dr?.policy ?? {}, dns));
      if (!dns) endpoints.set(base, buildLoadAssignment(base, eps));
      for (const s of dr?.subsets ?? []) {
        const sub = clusterName(svc.host, port, s.name);
        clusters.set(sub, buildCluster(sub, s.policy, dns));
        if (!dns) endpoints.set(sub, buildLoadAssignment(sub, eps.filter((e) => matches(e.labels, s.labels))));
      }
    }
  }
  // Configuration for hosts that do not exist is kept (the host may appear later) but reported.
  for (const [host, tables] of net.routes) if (!services.has(host)) for (const t of tables) problemAt(t.source, 'spec', `host ${host} is not a known Service or ServiceEntry`);
  for (const [host, dr] of net.destinationRules) if (!services.has(host)) problemAt(dr.source, 'spec.host', `host ${host} is not a known Service or ServiceEntry`);

  return {
    resources: new Map([[TYPE_CLUSTER, clusters], [TYPE_ENDPOINT, endpoints], [TYPE_LISTENER, listeners], [TYPE_ROUTE, routes]]),
    problems,
  };
}

/** Replaces the Envoy types in the store, clusters first so no route names a cluster a client lacks. */
export function publishEnvoyResources(store: ResourceStore, built: EnvoyResources): void {
  for (const t of ENVOY_TYPES) store.replace(t, built.resources.get(t) ?? new Map());
}
