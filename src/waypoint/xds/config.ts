// The waypoint's configuration from the control plane: LDS and CDS as wildcards, RDS for the route
// configurations the listeners name, EDS for the clusters' service names (as Envoy subscribes),
// over the generic xDS client (src/xds) in Delta mode, as Envoy's waypoints take it from istiod:
// each response carries only what changed and names what was removed; after a reconnect the
// client says what it holds (initial_resource_versions) and gets only what differs. Names a
// listener or cluster stops giving are unsubscribed and dropped at once. Each response is decoded
// and checked whole (compile.ts) before anything changes; a resource that fails is refused (the
// client NACKs with the message) and the last good table stays. Every applied change builds a new
// immutable RoutingTable and swaps it in at once.
import type { Logger } from 'pino';
import { XdsClient, type XdsUpdate, type XdsWatch } from '../../xds/client.ts';
import type { Cluster, Endpoint, RouteConfig, RoutingTable } from '../router/table.ts';
import { EMPTY_TABLE } from '../router/table.ts';
import { compileCluster, compileListener, compileLoadAssignment, compileRouteConfig, GATEWAY_LISTENER_PREFIX, type CompiledListener } from './compile.ts';
import { mergeFilters, NO_FILTERS, type ListenerFilters } from '../filters/chain.ts';
import type { FilterEnv } from '../filters/registry.ts';
import { mergeTelemetry, type ListenerTelemetry } from '../tracing/config.ts';
import { decodeEnvoy, envoyNameOf, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from './envoy.ts';

export interface WaypointXdsOptions {
  address: string;
  nodeId: string;
  log: Logger;
  tls?: { rootPem: string | (() => string); serverName: string };
  token?: string | (() => string);
}

type ClusterEntry = Cluster & { unsupported?: string };

/** The held resources, compiled, and the table built from them. */
export class WaypointConfig {
  private listeners = new Map<string, CompiledListener>();
  private routes = new Map<string, RouteConfig>();
  private clusters = new Map<string, ClusterEntry>();
  private endpoints = new Map<string, Endpoint[]>();
  private current: RoutingTable = EMPTY_TABLE;
  /** What filters may use at run time, and which Gateway's own Listener is this waypoint's. */
  readonly env: FilterEnv;

  constructor(env: FilterEnv = {}) {
    // Filters reach the current table's endpoints (remote JWKS are fetched from a cluster's).
    this.env = { clusterEndpoints: (c) => this.clusterEndpoints(c), ...env };
  }

  private clusterEndpoints(cluster: string): readonly Endpoint[] {
    const c = this.current.clusters.get(cluster);
    return (c && this.current.endpoints.get(c.edsName)) ?? [];
  }
  /** Called after each applied change with the new table. */
  onChange?: (t: RoutingTable) => void;
  /** Follows what listeners and clusters name (set by connect()). */
  private follow?: (typeUrl: string, names: string[]) => void;

  get table(): RoutingTable {
    return this.current;
  }

  /** Why a cluster cannot be served, if it is held but not an EDS cluster. */
  unsupported(cluster: string): string | undefined {
    return this.clusters.get(cluster)?.unsupported;
  }

  /** The four watches, for an XdsClient in either mode (nameOf serves SotW), or a test feeding updates by hand. */
  watches(): XdsWatch[] {
    const w = (typeUrl: string, names: string[] | undefined, apply: (u: XdsUpdate) => void): XdsWatch => ({ typeUrl, names, nameOf: envoyNameOf(typeUrl), apply });
    return [
      w(TYPE_CLUSTER, undefined, (u) => this.applyType(u, this.clusters, (m) => compileCluster(m))),
      w(TYPE_ENDPOINT, [], (u) => this.applyType(u, this.endpoints, (m) => compileLoadAssignment(m).endpoints)),
      w(TYPE_LISTENER, undefined, (u) => this.applyType(u, this.listeners, (m) => compileListener(m, this.env))),
      w(TYPE_ROUTE, [], (u) => this.applyType(u, this.routes, (m) => compileRouteConfig(m))),
    ];
  }

  /** Starts an xDS client feeding this config; the caller closes it. */
  connect(o: WaypointXdsOptions): XdsClient {
    const client = new XdsClient({ ...o, mode: 'delta', watches: this.watches() });
    this.follow = (typeUrl, names) => client.subscribe(typeUrl, names);
    client.start();
    return client;
  }

  /** Decodes and compiles every resource first (throwing refuses the whole response), then commits. */
  private applyType<T>(u: XdsUpdate, held: Map<string, T>, compile: (m: Record<string, unknown>) => T): void {
    const next: Array<[string, T]> = u.resources.map((r) => {
      let m: Record<string, unknown>;
      try {
        m = decodeEnvoy(u.typeUrl, r.body);
      } catch (e) {
        throw new Error(`${r.name}: does not decode: ${(e as Error).message}`, { cause: e });
      }
      return [r.name, compile(m)];
    });
    for (const [n, v] of next) held.set(n, v);
    for (const n of u.removed) held.delete(n);
    const http = new Map<string, string>();
    const tcp = new Map<string, string>();
    const fallback = new Map<string, string>();
    // The waypoint's own Listener (what targets its Gateway) merged into every port's filters.
    const gw = this.env.gateway;
    const own = (gw && this.listeners.get(`${GATEWAY_LISTENER_PREFIX}${gw.namespace}/${gw.name}`)?.filters) || NO_FILTERS;
    const filters = new Map<string, ListenerFilters>();
    const ownTelemetry = gw && this.listeners.get(`${GATEWAY_LISTENER_PREFIX}${gw.namespace}/${gw.name}`)?.telemetry;
    const telemetry = new Map<string, ListenerTelemetry>();
    for (const [n, l] of this.listeners) {
      if (l.gateway) continue;
      const merged = mergeFilters(own, l.filters);
      if (merged.http.length || merged.network.length) filters.set(n, merged);
      const t = mergeTelemetry(ownTelemetry, l.telemetry);
      if (t) telemetry.set(n, t);
      if (l.tcpCluster !== undefined) tcp.set(n, l.tcpCluster);
      else {
        http.set(n, l.routeConfigName);
        if (l.fallbackTcpCluster !== undefined) fallback.set(n, l.fallbackTcpCluster);
      }
    }
    if (u.typeUrl === TYPE_LISTENER) this.follow?.(TYPE_ROUTE, [...new Set(http.values())]);
    if (u.typeUrl === TYPE_CLUSTER) this.follow?.(TYPE_ENDPOINT, [...new Set([...this.clusters.values()].map((c) => c.edsName).filter(Boolean))]);
    this.current = {
      listeners: http,
      tcpListeners: tcp,
      tcpFallback: fallback,
      filters,
      ownFilters: own,
      ...(telemetry.size && { telemetry }),
      ...(ownTelemetry && { ownTelemetry }),
      routes: new Map(this.routes),
      clusters: new Map(this.clusters),
      endpoints: new Map([...this.endpoints].map(([n, e]) => [n, Object.freeze([...e])])),
    };
    this.onChange?.(this.current);
  }
}
