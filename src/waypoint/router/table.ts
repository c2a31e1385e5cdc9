// The waypoint's routing table: what the xDS resources (xds/compile.ts) become, immutable once built
// and swapped in whole (xds/config.ts), so a request always sees one consistent view. Per service
// port (the listener `host:port`) its route configuration; per cluster its endpoints.
import type { RouteRateLimit } from '../filters/rate-limit.ts';
import type { ListenerFilters } from '../filters/chain.ts';
import type { ListenerTelemetry } from '../tracing/config.ts';
import type { FaultConfig, RetryPolicy } from './policies.ts';
import type { DirectResponse, HeaderEdits, Redirect, RouteRewrite } from './actions.ts';

/** A string matcher as Envoy's StringMatcher, compiled. */
export type Matcher = (value: string) => boolean;

export interface HeaderMatcher {
  name: string;
  /** Undefined: the header must be present (present_match). */
  match?: Matcher;
  invert: boolean;
}

export interface QueryMatcher {
  name: string;
  /** Undefined: the parameter must be present. */
  match?: Matcher;
}

export interface WeightedCluster {
  name: string;
  weight: number;
  /** Applied before the route's own (router/actions.ts). */
  requestHeaders?: HeaderEdits;
  responseHeaders?: HeaderEdits;
}

/** request_mirror_policies: a copy of a share of the requests (0..1) to another cluster. */
export interface Mirror {
  cluster: string;
  fraction: number;
}

export interface Route {
  name: string;
  path: Matcher;
  /** Matched against request headers; `:method` names the method, as in Envoy. */
  headers: HeaderMatcher[];
  query: QueryMatcher[];
  clusters: WeightedCluster[];
  totalWeight: number;
  /** 0: no timeout (Istio's default). */
  timeoutMs: number;
  /** Envoy's local rate limit for this route (filters/rate-limit.ts). */
  rateLimit?: RouteRateLimit;
  /** Envoy's route hash_policy, in order: what a consistent-hash cluster hashes. Absent: none. */
  hashPolicies?: HashPolicy[];
  /** Envoy's retry_policy; absent: no retries. */
  retry?: RetryPolicy;
  /** The fault filter's per-route config (typed_per_filter_config). */
  fault?: FaultConfig;
  /** A route that answers locally (redirect or direct_response) has no clusters. */
  redirect?: Redirect;
  direct?: DirectResponse;
  rewrite?: RouteRewrite;
  requestHeaders?: HeaderEdits;
  responseHeaders?: HeaderEdits;
  mirrors?: Mirror[];
}

/** One entry of a route's hash_policy; `terminal` stops the evaluation once it produced a hash. */
export type HashPolicy = { terminal: boolean } & (
  | { header: string }
  | { cookie: { name: string; path?: string; /** Absent: never generated; 0: a session cookie. */ ttlMs?: number } }
  | { sourceIp: true }
  | { query: string }
);

export interface VirtualHost {
  name: string;
  domains: string[];
  routes: Route[];
}

export interface RouteConfig {
  name: string;
  virtualHosts: VirtualHost[];
}

export interface Endpoint {
  address: string;
  port: number;
}

/** How a cluster picks among its endpoints (Envoy's lb_policy or load_balancing_policy). */
export type LbPolicy =
  | { kind: 'ROUND_ROBIN' }
  | { kind: 'RANDOM' }
  | { kind: 'LEAST_REQUEST'; choiceCount: number }
  | { kind: 'RING_HASH'; minimumRingSize: number; maximumRingSize: number }
  | { kind: 'MAGLEV'; tableSize: number };

/** Envoy's circuit_breakers thresholds (priority DEFAULT), Envoy's defaults filled in. */
export interface CircuitThresholds {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
}

/** Envoy's outlier_detection, its defaults filled in; an enforcing of 0 turns a detector off. */
export interface OutlierConfig {
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionTimeMs: number;
  maxEjectionPercent: number;
  /** Eject one host even when max_ejection_percent would not allow it (Envoy's always_eject_one_host). */
  alwaysEjectOneHost: boolean;
  consecutive5xx: number;
  enforcingConsecutive5xx: number;
  consecutiveGatewayFailure: number;
  enforcingConsecutiveGatewayFailure: number;
  failurePercentageThreshold: number;
  enforcingFailurePercentage: number;
  failurePercentageMinimumHosts: number;
  failurePercentageRequestVolume: number;
}

export interface Cluster {
  name: string;
  /** The ClusterLoadAssignment it takes endpoints from. */
  edsName: string;
  /** Absent: round robin. */
  lb?: LbPolicy;
  /** Absent: Envoy's defaults (1024 connections, pending and requests, 3 retries). */
  circuit?: CircuitThresholds;
  /** Absent: no outlier detection. */
  outlier?: OutlierConfig;
  /** common_lb_config.healthy_panic_threshold in percent (Envoy's default 50; Istio sets 0 with outlier detection). */
  panicThreshold?: number;
  /** The upstream speaks HTTP/2 with prior knowledge (the cluster's explicit http2_protocol_options); else HTTP/1.1. */
  http2?: boolean;
}

/** Everything a request is decided from. */
export interface RoutingTable {
  /** listener name (`host:port`) -> the name of its route configuration */
  listeners: ReadonlyMap<string, string>;
  routes: ReadonlyMap<string, RouteConfig>;
  clusters: ReadonlyMap<string, Cluster>;
  /** EDS name -> healthy endpoints */
  endpoints: ReadonlyMap<string, readonly Endpoint[]>;
  /** listener name (`host:port`) -> the cluster its tcp_proxy relays to: a TCP port, no HTTP routing. */
  tcpListeners?: ReadonlyMap<string, string>;
  /** listener name -> the cluster that takes what is not HTTP on a port of undeclared protocol. */
  tcpFallback?: ReadonlyMap<string, string>;
  /** listener name -> its filters merged with the waypoint's own (absent: none). */
  filters?: ReadonlyMap<string, ListenerFilters>;
  /** The waypoint's own filters (what targets its Gateway): for traffic addressed to a workload. */
  ownFilters?: ListenerFilters;
  /** listener name -> its tracing and access log switch over the waypoint's own (absent: none). */
  telemetry?: ReadonlyMap<string, ListenerTelemetry>;
  /** The waypoint's own telemetry: for traffic addressed to a workload. */
  ownTelemetry?: ListenerTelemetry;
}

export const EMPTY_TABLE: RoutingTable = { listeners: new Map(), routes: new Map(), clusters: new Map(), endpoints: new Map() };

/** The request facts routing reads. Header names are lower case. */
export interface RequestFacts {
  method: string;
  /** The path without the query. */
  path: string;
  query: URLSearchParams;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  host: string;
  /** The request target as received (path and query), for redirects. */
  url?: string;
  /** `:scheme`; plaintext inside the tunnel, so http unless the request says otherwise. */
  scheme?: string;
}

const headerValue = (r: RequestFacts, name: string): string | undefined => {
  if (name === ':method') return r.method;
  if (name === ':path') return r.path;
  if (name === ':authority') return r.host;
  if (name === ':scheme') return r.scheme ?? 'http';
  const v = r.headers[name];
  return Array.isArray(v) ? v.join(',') : v; // Envoy matches repeated headers joined by commas
};

function matches(route: Route, r: RequestFacts): boolean {
  if (!route.path(r.path)) return false;
  for (const h of route.headers) {
    const v = headerValue(r, h.name);
    const hit = v !== undefined && (!h.match || h.match(v));
    if (hit === h.invert) return false;
  }
  for (const q of route.query) {
    const v = r.query.get(q.name);
    if (v === null || (q.match && !q.match(v))) return false;
  }
  return true;
}

/** The virtual host for a Host header: an exact domain, then `*`; a single host serves every name (the listener chose the service). */
export function selectVirtualHost(rc: RouteConfig, host: string): VirtualHost | undefined {
  if (rc.virtualHosts.length === 1) return rc.virtualHosts[0];
  const h = host.toLowerCase();
  return rc.virtualHosts.find((v) => v.domains.includes(h)) ?? rc.virtualHosts.find((v) => v.domains.includes('*'));
}

/** The first route that matches, in order (Envoy's semantics). */
export function selectRoute(vh: VirtualHost, r: RequestFacts): Route | undefined {
  return vh.routes.find((route) => matches(route, r));
}
