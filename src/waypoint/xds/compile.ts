// Envoy resources (decoded by envoy.ts) -> the routing table's parts (router/table.ts). Everything a
// request will need is checked here, so a resource the waypoint cannot serve is refused (a NACK
// naming the resource and field) instead of failing requests later. Retry policies and fault
// filter configs are checked in resilience.ts.
import { isIP } from 'node:net';
import type { Cluster, Endpoint, HeaderMatcher, QueryMatcher, Route, RouteConfig, VirtualHost, WeightedCluster } from '../router/table.ts';
import { compileCircuit, compileHashPolicies, compileLbPolicy, compileOutlier, compilePanicThreshold } from './cluster-policy.ts';
import type { FaultConfig } from '../router/policies.ts';
import { compileDirectResponse, compileRedirect, compileRouteRewrite, DEFAULT_MAX_DIRECT_BODY, headerEdits, matchedLength, refuseHostLevelHeaders } from './compile-actions.ts';
import { pathMatcher, stringMatcher } from './string-matcher.ts';
export { stringMatcher };
import { decodeEnvoy, HCM, HTTP_PROTOCOL_OPTIONS, TCP_PROXY, type Msg } from './envoy.ts';
import { compileRouteRateLimit, LOCAL_RATE_LIMIT_FILTER } from '../filters/rate-limit.ts';
import { compileFault, compileRetryPolicy, FAULT_FILTER } from './resilience.ts';
import type { ListenerFilters, NetworkFilter } from '../filters/chain.ts';
import { compileHttpFilters, compileNetworkFilters, type FilterEnv } from '../filters/registry.ts';
import { compileListenerTelemetry, type ListenerTelemetry } from '../tracing/config.ts';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const wrapped = (v: unknown): number | undefined => {
  const n = obj(v)?.value;
  return typeof n === 'number' ? n : undefined;
};


function headerMatcher(h: Msg, field: string): HeaderMatcher {
  const name = str(h.name)?.toLowerCase();
  if (!name) throw new Error(`${field}.name: empty`);
  const invert = h.invertMatch === true;
  if (obj(h.stringMatch)) return { name, match: stringMatcher(obj(h.stringMatch)!, `${field}.string_match`), invert };
  if (typeof h.exactMatch === 'string') return { name, match: stringMatcher({ exact: h.exactMatch }, field), invert };
  if (typeof h.prefixMatch === 'string') return { name, match: stringMatcher({ prefix: h.prefixMatch }, field), invert };
  if (typeof h.suffixMatch === 'string') return { name, match: stringMatcher({ suffix: h.suffixMatch }, field), invert };
  if (obj(h.safeRegexMatch)) return { name, match: stringMatcher({ safeRegex: h.safeRegexMatch }, field), invert };
  if (h.presentMatch !== undefined) return { name, invert: h.presentMatch === false ? !invert : invert };
  if (h.rangeMatch !== undefined) throw new Error(`${field}: range_match is not supported`);
  return { name, invert }; // no specifier: Envoy treats it as present_match
}

function queryMatcher(q: Msg, field: string): QueryMatcher {
  const name = str(q.name);
  if (!name) throw new Error(`${field}.name: empty`);
  if (obj(q.stringMatch)) return { name, match: stringMatcher(obj(q.stringMatch)!, `${field}.string_match`) };
  return { name };
}

const ms = (d: unknown): number => {
  const o = obj(d);
  return o ? (Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6)) : 0;
};

function route(r: Msg, field: string, maxDirectBody = DEFAULT_MAX_DIRECT_BODY): Route {
  const name = str(r.name) ?? '';
  const f = `${field}${name ? ` (${name})` : ''}`;
  let fault: FaultConfig | undefined;
  for (const [filter, any] of Object.entries(obj(r.typedPerFilterConfig) ?? {})) {
    if (filter === LOCAL_RATE_LIMIT_FILTER) continue; // compiled below, with the route action's rate_limits
    if (filter !== FAULT_FILTER) throw new Error(`${f}.typed_per_filter_config: unknown filter ${filter}`);
    fault = compileFault(any, f);
  }
  const match = obj(r.match);
  if (!match) throw new Error(`${f}.match: missing`);
  const rateLimitConfig = obj(r.typedPerFilterConfig)?.[LOCAL_RATE_LIMIT_FILTER];
  const rateLimit = rateLimitConfig === undefined ? undefined : compileRouteRateLimit(rateLimitConfig, obj(r.route)?.rateLimits, f, field, decodeEnvoy, headerMatcher);
  const matchers = {
    name,
    path: pathMatcher(match, `${f}.match`),
    headers: arr(match.headers).map((h, i) => headerMatcher(h, `${f}.match.headers[${i}]`)),
    query: arr(match.queryParameters).map((q, i) => queryMatcher(q, `${f}.match.query_parameters[${i}]`)),
    ...headerEdits(r, f),
    // The route's filters apply whatever its action: a redirect can be rate limited or faulted too.
    ...(rateLimit ? { rateLimit } : {}),
    ...(fault ? { fault } : {}),
  };
  // A local answer (router/actions.ts): no clusters to choose from.
  if (obj(r.redirect)) return { ...matchers, clusters: [], totalWeight: 0, timeoutMs: 0, redirect: compileRedirect(obj(r.redirect)!, matchedLength(match), `${f}.redirect`) };
  if (obj(r.directResponse)) return { ...matchers, clusters: [], totalWeight: 0, timeoutMs: 0, direct: compileDirectResponse(obj(r.directResponse)!, maxDirectBody, `${f}.direct_response`) };
  const action = obj(r.route);
  if (!action) throw new Error(`${f}: no route action`);
  let clusters: WeightedCluster[];
  if (typeof action.cluster === 'string' && action.cluster) clusters = [{ name: action.cluster, weight: 1 }];
  else if (obj(action.weightedClusters)) {
    clusters = arr(obj(action.weightedClusters)!.clusters).map((c, i) => {
      const cn = str(c.name);
      if (!cn) throw new Error(`${f}.route.weighted_clusters.clusters[${i}].name: empty`);
      const w = wrapped(c.weight) ?? 0;
      if (!Number.isSafeInteger(w) || w < 0) throw new Error(`${f}.route.weighted_clusters.clusters[${i}].weight: ${w} is not a non-negative integer`);
      return { name: cn, weight: w, ...headerEdits(c, `${f}.route.weighted_clusters.clusters[${i}]`) };
    });
  } else throw new Error(`${f}.route: needs cluster or weighted_clusters (cluster_header and the rest are not supported)`);
  const totalWeight = clusters.reduce((n, c) => n + c.weight, 0);
  if (!clusters.length || totalWeight <= 0) throw new Error(`${f}.route.weighted_clusters: the weights add up to 0`);
  const hashPolicies = compileHashPolicies(action.hashPolicy, `${f}.route`);
  return {
    ...matchers,
    ...(hashPolicies ? { hashPolicies } : {}),
    clusters,
    totalWeight,
    timeoutMs: ms(action.timeout),
    ...(obj(action.retryPolicy) ? { retry: compileRetryPolicy(obj(action.retryPolicy)!, `${f}.route`) } : {}),
    ...compileRouteRewrite(action, matchedLength(match), `${f}.route`),
  };
}

export function compileRouteConfig(m: Msg): RouteConfig {
  const name = str(m.name);
  if (!name) throw new Error('RouteConfiguration: empty name');
  refuseHostLevelHeaders(m, `RouteConfiguration ${name}`);
  const maxDirectBody = wrapped(m.maxDirectResponseBodySizeBytes) ?? DEFAULT_MAX_DIRECT_BODY;
  const virtualHosts: VirtualHost[] = arr(m.virtualHosts).map((v, i) => {
    const field = `RouteConfiguration ${name}: virtual_hosts[${i}]`;
    refuseHostLevelHeaders(v, field);
    return {
      name: str(v.name) ?? '',
      domains: (Array.isArray(v.domains) ? (v.domains as string[]) : []).map((d) => d.toLowerCase()),
      routes: arr(v.routes).map((r, j) => route(r, `${field}.routes[${j}]`, maxDirectBody)),
    };
  });
  return { name, virtualHosts };
}

/**
 * A TCP port (tcpCluster), an HTTP port (routeConfigName), or a port of undeclared protocol: HTTP
 * routes for what is HTTP, and the default filter chain's cluster (fallbackTcpCluster) for the rest.
 * A waypoint's own Listener (`waypoint/<ns>/<gateway>`) carries only filters, merged into the ports'.
 * `filters`: the HTTP filters of the HttpConnectionManager and the network filters of the TCP chain.
 */
export type CompiledListener = { name: string; filters: ListenerFilters; telemetry?: ListenerTelemetry } & (
  | { routeConfigName: string; tcpCluster?: undefined; fallbackTcpCluster?: string; gateway?: undefined }
  | { tcpCluster: string; routeConfigName?: undefined; fallbackTcpCluster?: undefined; gateway?: undefined }
  | { gateway: true; routeConfigName?: undefined; tcpCluster?: undefined; fallbackTcpCluster?: undefined }
);

const typeUrlOf = (any: Msg): string => str(any.typeUrl) ?? str(any.type_url) ?? '';

function decodeAny(any: Msg, type: string, field: string): Msg {
  try {
    return decodeEnvoy(type, (any.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${field}: ${type.split('.').pop()} does not decode: ${(e as Error).message}`, { cause: e });
  }
}

/** The name prefix of a waypoint's own Listener (the control plane's gatewayListenerName). */
export const GATEWAY_LISTENER_PREFIX = 'waypoint/';

/**
 * A Listener: an api_listener HCM over RDS (an HTTP port), or one filter chain whose filters end in
 * a tcp_proxy to one cluster (a TCP port, as Istio writes a waypoint's TCP chain), or a waypoint's
 * own Listener. Anything else in a tcp_proxy (weighted clusters, tunneling, hash policy...) would
 * change where bytes go: refused. The filters are compiled here, so a filter that cannot be served
 * refuses the Listener.
 */
export function compileListener(m: Msg, env: FilterEnv = {}): CompiledListener {
  const name = str(m.name);
  if (!name) throw new Error('Listener: empty name');
  const chains = arr(m.filterChains);
  if (chains.length) {
    if (m.apiListener !== undefined) throw new Error(`Listener ${name}: both api_listener and filter_chains (the waypoint takes one or the other)`);
    if (chains.length > 1) throw new Error(`Listener ${name}.filter_chains: ${chains.length} chains (the waypoint takes one, for the port)`);
    if (m.defaultFilterChain !== undefined) throw new Error(`Listener ${name}.default_filter_chain: beside filter_chains (the waypoint takes one chain for a TCP port)`);
    const chain = tcpChain(chains[0]!, `Listener ${name}.filter_chains[0]`, env);
    return { name, tcpCluster: chain.cluster, filters: { http: [], network: chain.network } };
  }
  const any = obj(obj(m.apiListener)?.apiListener);
  if (!any) throw new Error(`Listener ${name}: no api_listener and no filter_chains`);
  const typeUrl = typeUrlOf(any);
  if (!typeUrl.endsWith(`/${HCM}`)) throw new Error(`Listener ${name}: api_listener is ${typeUrl || 'empty'}, not an HttpConnectionManager`);
  let hcm: Msg;
  try {
    hcm = decodeEnvoy(HCM, (any.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`Listener ${name}: HttpConnectionManager does not decode: ${(e as Error).message}`, { cause: e });
  }
  const http = compileHttpFilters(arr(hcm.httpFilters), `Listener ${name}: http_filters`, env);
  // Tracing and the access log switch (Telemetry), when the HCM carries them.
  const t = compileListenerTelemetry(hcm, `Listener ${name}`);
  const telemetry = t ? { telemetry: t } : {};
  const fallback = obj(m.defaultFilterChain);
  if (name.startsWith(GATEWAY_LISTENER_PREFIX)) {
    const network = fallback ? compileNetworkFilters(arr(fallback.filters), `Listener ${name}.default_filter_chain.filters`, env) : [];
    return { name, gateway: true, filters: { http, network }, ...telemetry };
  }
  const routeConfigName = str(obj(hcm.rds)?.routeConfigName);
  if (!routeConfigName) throw new Error(`Listener ${name}: the HttpConnectionManager has no rds.route_config_name (inline route_config is not supported)`);
  if (!fallback) return { name, routeConfigName, filters: { http, network: [] }, ...telemetry };
  const chain = tcpChain(fallback, `Listener ${name}.default_filter_chain`, env);
  return { name, routeConfigName, fallbackTcpCluster: chain.cluster, filters: { http, network: chain.network }, ...telemetry };
}

/** A filter chain of network filters ending in one tcp_proxy (no match, no TLS: the tunnel is the transport). */
function tcpChain(chain: Msg, at: string, env: FilterEnv): { cluster: string; network: NetworkFilter[] } {
  if (chain.filterChainMatch !== undefined) throw new Error(`${at}.filter_chain_match: not supported by the waypoint`);
  if (chain.transportSocket !== undefined) throw new Error(`${at}.transport_socket: not supported by the waypoint`);
  const filters = arr(chain.filters);
  const last = filters.length - 1;
  const any = obj(filters[last]?.typedConfig);
  if (!any || !typeUrlOf(any).endsWith(`/${TCP_PROXY}`)) throw new Error(`${at}.filters: the waypoint takes a chain ending in one tcp_proxy filter`);
  const network = compileNetworkFilters(filters.slice(0, last), `${at}.filters`, env);
  const field = `${at}.filters[${last}] (tcp_proxy)`;
  const tcp = decodeAny(any, TCP_PROXY, field);
  for (const k of Object.keys(tcp)) if (k !== 'statPrefix' && k !== 'cluster' && k !== 'clusterSpecifier') throw new Error(`${field}.${k}: not supported by the waypoint`);
  const cluster = str(tcp.cluster);
  if (!cluster) throw new Error(`${field}.cluster: empty (weighted_clusters is not supported)`);
  return { cluster, network };
}

/** The upstream HTTP version of a cluster (Envoy's HttpProtocolOptions): HTTP/1.1 unless explicitly HTTP/2. */
function upstreamHttp2(m: Msg, name: string): boolean {
  const opts = obj(m.typedExtensionProtocolOptions) ?? {};
  let http2 = false;
  for (const [key, v] of Object.entries(opts)) {
    const field = `Cluster ${name}.typed_extension_protocol_options[${key}]`;
    const any = obj(v);
    if (key !== HTTP_PROTOCOL_OPTIONS || !any || !typeUrlOf(any).endsWith(`/${HTTP_PROTOCOL_OPTIONS}`)) throw new Error(`${field}: not supported by the waypoint`);
    const o = decodeAny(any, HTTP_PROTOCOL_OPTIONS, field);
    const explicit = obj(o.explicitHttpConfig);
    if (!explicit) throw new Error(`${field}: only explicit_http_config is supported (use_downstream_protocol_config and auto_config are not)`);
    if (obj(explicit.http2ProtocolOptions)) http2 = true;
    else if (!obj(explicit.httpProtocolOptions)) throw new Error(`${field}.explicit_http_config: HTTP/1.1 or HTTP/2 only`);
  }
  return http2;
}

/** A Cluster: EDS ones are served; others (LOGICAL_DNS egress) are held with the reason requests to them fail. */
export function compileCluster(m: Msg): Cluster & { unsupported?: string } {
  const name = str(m.name);
  if (!name) throw new Error('Cluster: empty name');
  const type = str(m.type) ?? 'STATIC';
  const http2 = upstreamHttp2(m, name);
  if (type !== 'EDS') return { name, edsName: '', http2, unsupported: `cluster ${name} is ${type}: only EDS clusters are reachable through the waypoint` };
  const circuit = compileCircuit(m, name);
  const outlier = compileOutlier(m, name);
  return {
    name,
    edsName: str(obj(m.edsClusterConfig)?.serviceName) || name,
    http2,
    lb: compileLbPolicy(m, name),
    ...(circuit ? { circuit } : {}),
    ...(outlier ? { outlier } : {}),
    panicThreshold: compilePanicThreshold(m, name),
  };
}

/** A ClusterLoadAssignment -> its usable endpoints (HEALTHY or UNKNOWN), every address checked. */
export function compileLoadAssignment(m: Msg): { name: string; endpoints: Endpoint[] } {
  const name = str(m.clusterName);
  if (!name) throw new Error('ClusterLoadAssignment: empty cluster_name');
  const endpoints: Endpoint[] = [];
  arr(m.endpoints).forEach((loc, i) =>
    arr(loc.lbEndpoints).forEach((e, j) => {
      const field = `ClusterLoadAssignment ${name}: endpoints[${i}].lb_endpoints[${j}]`;
      const sa = obj(obj(obj(e.endpoint)?.address)?.socketAddress);
      const address = str(sa?.address);
      const port = sa?.portValue;
      if (!address || !isIP(address)) throw new Error(`${field}.endpoint.address: ${address ?? 'missing'} is not an IP address`);
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${field}.endpoint.address.port_value: ${String(port)} is not a port`);
      const health = str(e.healthStatus) ?? 'UNKNOWN';
      if (health === 'HEALTHY' || health === 'UNKNOWN') endpoints.push({ address, port });
    }),
  );
  return { name, endpoints };
}
