// The decision for one HTTP request, apart from any socket (ztunnel's "decide, then act"): from the
// routing table, the service port the tunnel was for and the request's facts, either where to send
// it (cluster, endpoint, the identity to expect there) or the local answer with Envoy's response
// flag. NR: no route (404, as Envoy answers); UH: no healthy endpoint (503); NC: the route names a
// cluster the waypoint does not have (503).
import type { Balancer } from '../upstream/balancer.ts';
import { chooseMirrors, type MirrorTarget } from '../upstream/mirror.ts';
import type { MeshIndex } from '../mesh.ts';
import { localAnswer, type LocalAnswer } from './actions.ts';
import { selectRoute, selectVirtualHost, type Endpoint, type RequestFacts, type Route, type RoutingTable } from './table.ts';

export type Plan =
  | { kind: 'forward'; route: string; cluster: string; endpoint: Endpoint; identity: string; timeoutMs: number; entry?: Route; mirrors?: MirrorTarget[] }
  | { kind: 'local'; status: number; flags: 'NR' | 'UH' | 'NC'; reason: string; route?: string; cluster?: string }
  /** The route itself answers (redirect, direct response): router/actions.ts. */
  | ({ kind: 'answer'; route: string; cluster?: undefined } & LocalAnswer);

export interface PlanInput {
  table: RoutingTable;
  mesh: MeshIndex;
  balancer: Balancer;
  /** The listener of the service port the tunnel was opened for (`hostname:port`). */
  listener: string;
  req: RequestFacts;
  /** Why a held cluster cannot be served (non-EDS), if so. */
  unsupported?: (cluster: string) => string | undefined;
}

export function planRequest({ table, mesh, balancer, listener, req, unsupported }: PlanInput): Plan {
  const rcName = table.listeners.get(listener);
  if (!rcName) return { kind: 'local', status: 404, flags: 'NR', reason: `no listener ${listener}` };
  const rc = table.routes.get(rcName);
  if (!rc) return { kind: 'local', status: 404, flags: 'NR', reason: `no route configuration ${rcName}` };
  const vh = selectVirtualHost(rc, req.host);
  if (!vh) return { kind: 'local', status: 404, flags: 'NR', reason: `${rcName}: no virtual host for ${req.host}` };
  const route = selectRoute(vh, req);
  if (!route) return { kind: 'local', status: 404, flags: 'NR', reason: `${rcName}: no route matches ${req.method} ${req.path}` };
  const answer = localAnswer(route, { url: req.url ?? req.path, host: req.host, headers: req.headers });
  if (answer) return { kind: 'answer', route: route.name, ...answer };
  const cluster = balancer.cluster(route).name;
  const c = table.clusters.get(cluster);
  if (!c) return { kind: 'local', status: 503, flags: 'NC', reason: `cluster ${cluster} not found`, route: route.name, cluster };
  const why = unsupported?.(cluster);
  if (why) return { kind: 'local', status: 503, flags: 'UH', reason: why, route: route.name, cluster };
  // An endpoint with no known workload has no identity to check: it is not sent to (fails closed).
  const endpoints = (table.endpoints.get(c.edsName) ?? []).filter((e) => mesh.identity(e.address) !== undefined);
  const endpoint = balancer.endpoint(cluster, endpoints);
  if (!endpoint) return { kind: 'local', status: 503, flags: 'UH', reason: `cluster ${cluster}: no healthy endpoint`, route: route.name, cluster };
  const mirrors = route.mirrors ? chooseMirrors(route, table, mesh, balancer) : undefined;
  return { kind: 'forward', route: route.name, cluster, endpoint, identity: mesh.identity(endpoint.address)!, timeoutMs: route.timeoutMs, entry: route, ...(mirrors?.length ? { mirrors } : {}) };
}
