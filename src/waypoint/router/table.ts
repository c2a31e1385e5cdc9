// The waypoint's routing table: what the xDS resources (xds/compile.ts) become, immutable once built
// and swapped in whole (xds/config.ts), so a request always sees one consistent view. Per service
// port (the listener `host:port`) its route configuration; per cluster its endpoints.

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
}

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

export interface Cluster {
  name: string;
  /** The ClusterLoadAssignment it takes endpoints from. */
  edsName: string;
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
}

const headerValue = (r: RequestFacts, name: string): string | undefined => {
  if (name === ':method') return r.method;
  if (name === ':path') return r.path;
  if (name === ':authority') return r.host;
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
