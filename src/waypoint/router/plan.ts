// The decision for one HTTP request, apart from any socket (ztunnel's "decide, then act"): from the
// routing table, the service port the tunnel was for and the request's facts, either where to send
// it (cluster, endpoint, the identity to expect there) or the local answer with Envoy's response
// flag. NR: no route (404, as Envoy answers); UH: no healthy endpoint (503); NC: the route names a
// cluster the waypoint does not have (503). The endpoint is the balancer's pick by the cluster's
// policy and the route's hash_policy (router/hash-key.ts); a pick is a request in flight until the
// caller reports its result (Balancer.onResult).
import type { Balancer } from '../upstream/balancer.ts';
import type { FaultConfig, RetryPolicy } from './policies.ts';
import { chooseMirrors, type MirrorTarget } from '../upstream/mirror.ts';
import type { MeshIndex } from '../mesh.ts';
import type { RouteRateLimit } from '../filters/rate-limit.ts';
import { localAnswer, type LocalAnswer } from './actions.ts';
import { requestHash } from './hash-key.ts';
import { selectRoute, selectVirtualHost, type Cluster, type Endpoint, type RequestFacts, type Route, type RoutingTable } from './table.ts';

export type Plan = (
  | {
      kind: 'forward'; route: string; cluster: string; endpoint: Endpoint; identity: string; timeoutMs: number;
      /** The cluster as picked from (its policy, for the result and circuit breakers); absent when a workload was addressed directly. */
      clusterConfig?: Cluster;
      /** A Set-Cookie the response gets (a consistent-hash cookie generated for this client). */
      setCookie?: string;
      /** The cluster's endpoints with a known identity: where retries may go. */
      endpoints?: readonly Endpoint[]; retry?: RetryPolicy; fault?: FaultConfig;
      /** The route (its rewrites and header edits) and where its mirrors go. */
      entry?: Route; mirrors?: MirrorTarget[];
    }
  | { kind: 'local'; status: number; flags: 'NR' | 'UH' | 'NC'; reason: string; route?: string; cluster?: string; fault?: FaultConfig }
  /** The route itself answers (redirect, direct response): router/actions.ts. */
  | ({ kind: 'answer'; route: string; cluster?: undefined; fault?: FaultConfig } & LocalAnswer)
) & { /** The chosen route's local rate limit: it applies before the cluster is looked at, as Envoy's filter runs before the router. */ rateLimit?: RouteRateLimit };

export interface PlanInput {
  table: RoutingTable;
  mesh: MeshIndex;
  balancer: Balancer;
  /** The listener of the service port the tunnel was opened for (`hostname:port`). */
  listener: string;
  req: RequestFacts;
  /** Why a held cluster cannot be served (non-EDS), if so. */
  unsupported?: (cluster: string) => string | undefined;
  /** The original client's address (the HBONE peer), for source-IP hashing. */
  source?: string;
}

export function planRequest({ table, mesh, balancer, listener, req, unsupported, source = '' }: PlanInput): Plan {
  const rcName = table.listeners.get(listener);
  if (!rcName) return { kind: 'local', status: 404, flags: 'NR', reason: `no listener ${listener}` };
  const rc = table.routes.get(rcName);
  if (!rc) return { kind: 'local', status: 404, flags: 'NR', reason: `no route configuration ${rcName}` };
  const vh = selectVirtualHost(rc, req.host);
  if (!vh) return { kind: 'local', status: 404, flags: 'NR', reason: `${rcName}: no virtual host for ${req.host}` };
  const route = selectRoute(vh, req);
  if (!route) return { kind: 'local', status: 404, flags: 'NR', reason: `${rcName}: no route matches ${req.method} ${req.path}` };
  const rl = route.rateLimit ? { rateLimit: route.rateLimit } : {};
  // The route's fault applies before the router looks at the cluster (Envoy's filter order).
  const fault = route.fault ? { fault: route.fault } : {};
  const answer = localAnswer(route, { url: req.url ?? req.path, host: req.host, headers: req.headers });
  if (answer) return { kind: 'answer', route: route.name, ...answer, ...rl, ...fault };
  const cluster = balancer.cluster(route).name;
  const c = table.clusters.get(cluster);
  if (!c) return { kind: 'local', status: 503, flags: 'NC', reason: `cluster ${cluster} not found`, route: route.name, cluster, ...rl, ...fault };
  const why = unsupported?.(cluster);
  if (why) return { kind: 'local', status: 503, flags: 'UH', reason: why, route: route.name, cluster, ...rl, ...fault };
  // An endpoint with no known workload has no identity to check: it is not sent to (fails closed).
  const endpoints = (table.endpoints.get(c.edsName) ?? []).filter((e) => mesh.identity(e.address) !== undefined);
  const { hash, setCookie } = requestHash(route.hashPolicies, req, source);
  const endpoint = balancer.pick(c, endpoints, hash);
  if (!endpoint) return { kind: 'local', status: 503, flags: 'UH', reason: `cluster ${cluster}: no healthy endpoint`, route: route.name, cluster, ...rl, ...fault };
  const retry = route.retry ? { retry: route.retry, endpoints } : {};
  const mirrors = route.mirrors ? chooseMirrors(route, table, mesh, balancer) : undefined;
  return {
    kind: 'forward', route: route.name, cluster, endpoint, identity: mesh.identity(endpoint.address)!, timeoutMs: route.timeoutMs, clusterConfig: c, entry: route,
    ...(setCookie ? { setCookie } : {}),
    ...(mirrors?.length ? { mirrors } : {}),
    ...retry, ...rl, ...fault,
  };
}
