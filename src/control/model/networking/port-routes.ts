// The routes of one service port, resolved: the rules attached to the host (Gateway API routes win
// over VirtualServices, as in Istio's GAMMA support), one route per match that applies to the port,
// each sending to concrete (host, port, subset) clusters with the mesh's retry default filled in;
// with no rule for the port, one default route to the whole service. Plain data: the xDS builders
// translate it (src/control/xds/envoy/routes.ts).
import type { HashKey } from './destination-rule.ts';
import type { RankedRule } from './gateway-routes.ts';
import type { LocalRateLimitPolicy } from './rate-limit.ts';
import type { DirectResponsePolicy, FaultPolicy, HeaderPolicy, RedirectPolicy, RewritePolicy, RouteMatch, RouteRule, RouteTable } from './routes.ts';
import type { MeshService } from './services.ts';

/** Istio's default retry policy (503 its retriable status); gRPC clients act on the gRPC-status conditions in it. */
export const DEFAULT_RETRY = { retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', codes: [503], attempts: 2, previousHosts: true };

/** What a route retries, in Envoy's terms. */
export interface RouteRetry {
  /** Envoy retry conditions, comma-separated (no status codes: those are in `codes`). */
  retryOn: string;
  /** retriable_status_codes. */
  codes: number[];
  attempts: number;
  perTryTimeoutMs?: number;
  backoffMs?: number;
  /** Envoy's previous_hosts retry predicate. */
  previousHosts: boolean;
}

/** One cluster: a service port, or one DestinationRule subset of it. */
export interface ClusterRef {
  host: string;
  port: number;
  /** Absent (or empty): the whole service. */
  subset?: string;
}

export interface RouteAction {
  /** Where requests go, with weights of at least 1; one entry means no split. */
  clusters: (ClusterRef & { weight: number; headers?: HeaderPolicy })[];
  /** Absent or 0: no timeout. */
  timeoutMs?: number;
  /** Absent: no retries. */
  retry?: RouteRetry;
  /** What to hash for a consistent-hash cluster: the first of the route's clusters that has one (filled by the traffic model). */
  hash?: HashKey;
}

export interface PortRoute {
  name: string;
  match: RouteMatch;
  action: RouteAction;
  fault?: FaultPolicy;
  /** A BackendTrafficPolicy's local rate limit (rate-limit.ts); each route has its own buckets. */
  rateLimit?: LocalRateLimitPolicy;
  /** What the route does besides (or instead of) forwarding; see routes.ts. */
  extras?: RouteExtras;
}

export interface RouteExtras {
  redirect?: RedirectPolicy;
  directResponse?: DirectResponsePolicy;
  rewrite?: RewritePolicy;
  headers?: HeaderPolicy;
  mirrors?: (ClusterRef & { percent: number })[];
}

export interface RouteContext {
  /** Every host by name: a destination without a port takes the port of a single-port host. */
  services: ReadonlyMap<string, MeshService>;
  /** Reports a destination that cannot be resolved; the route is still built (and fails at runtime). */
  problem: (source: string, reason: string) => void;
  /** The local rate limit for a rule of `source` (a route object) on `host`, if a policy targets either. */
  rateLimit?: (source: string, host: string) => LocalRateLimitPolicy | undefined;
}

/** The rules that apply to `host:port`, in evaluation order. */
export function rulesFor(port: number, tables: readonly RouteTable[]): { rule: RouteRule; source: string }[] {
  const gateway = tables.filter((t) => t.api === 'gateway' && (t.port === undefined || t.port === port));
  if (gateway.length) {
    // Most specific match first across every route of the parent; ties keep object, then rule order.
    const all = gateway.flatMap((t, ti) => t.rules.map((rule, ri) => ({ rule, source: t.source, ti, ri })));
    const rank = (r: RouteRule) => (r as RankedRule).rank ?? [];
    all.sort((a, b) => {
      const ra = rank(a.rule), rb = rank(b.rule);
      for (let i = 0; i < Math.max(ra.length, rb.length); i++) if ((ra[i] ?? 0) !== (rb[i] ?? 0)) return (rb[i] ?? 0) - (ra[i] ?? 0);
      return a.ti - b.ti || a.ri - b.ri;
    });
    return all;
  }
  return tables.filter((t) => t.api === 'istio').flatMap((t) => t.rules.map((rule) => ({ rule, source: t.source })));
}

/** The routes of `host:port`, in evaluation order; never empty. */
export function portRoutes(host: string, port: number, tables: readonly RouteTable[], ctx: RouteContext): PortRoute[] {
  const routes: PortRoute[] = [];
  for (const { rule, source } of rulesFor(port, tables)) {
    const action = routeAction(rule, host, port, source, ctx);
    const matches = rule.matches.length ? rule.matches.filter((m) => m.port === undefined || m.port === port) : [{ headers: [] }];
    const rateLimit = ctx.rateLimit?.(source, host);
    const extras = routeExtras(rule, host, port, source, ctx);
    for (const match of matches) {
      const r: PortRoute = rule.fault ? { name: rule.name, match, action, fault: rule.fault } : { name: rule.name, match, action };
      if (rateLimit) r.rateLimit = rateLimit;
      if (extras) r.extras = extras;
      routes.push(r);
    }
  }
  // No rule for this port: the whole service, as if nothing were attached.
  if (!routes.length) {
    const r: PortRoute = { name: 'default', match: { headers: [] }, action: routeAction({ name: 'default', matches: [], destinations: [{ host, port, weight: 1 }] }, host, port, '', ctx) };
    const rateLimit = ctx.rateLimit?.('', host);
    if (rateLimit) r.rateLimit = rateLimit;
    routes.push(r);
  }
  return routes;
}

function routeAction(rule: RouteRule, host: string, port: number, source: string, ctx: RouteContext): RouteAction {
  const clusters = rule.destinations
    .filter((d) => d.weight > 0 || rule.destinations.length === 1)
    .map((d) => ({ host: d.host, port: destinationPort(d, host, port, source, ctx), subset: d.subset, weight: Math.max(d.weight, 1), ...(d.headers ? { headers: d.headers } : {}) }));
  const action: RouteAction = { clusters, timeoutMs: rule.timeoutMs };
  const r = rule.retry;
  const attempts = r?.attempts ?? DEFAULT_RETRY.attempts;
  if (attempts > 0) {
    // As Istio: start from the default, the rule's retryOn replaces conditions and codes alike.
    action.retry = { ...DEFAULT_RETRY, ...(r?.retryOn ? splitRetryOn(r.retryOn) : {}), attempts, perTryTimeoutMs: r?.perTryTimeoutMs };
    if (r?.backoffMs) action.retry.backoffMs = r.backoffMs;
    if (r?.previousHosts === false) action.retry.previousHosts = false;
  }
  return action;
}

/** Istio's retryOn: status codes among the conditions become retriable_status_codes (and the condition that reads them). */
export function splitRetryOn(retryOn: string): { retryOn: string; codes: number[] } {
  const parts = retryOn.split(',').map((p) => p.trim()).filter(Boolean);
  const codes = parts.filter((p) => /^\d+$/.test(p)).map(Number);
  const conditions = parts.filter((p) => !/^\d+$/.test(p));
  if (codes.length && !conditions.includes('retriable-status-codes')) conditions.push('retriable-status-codes');
  return { retryOn: conditions.join(','), codes };
}

function routeExtras(rule: RouteRule, host: string, port: number, source: string, ctx: RouteContext): RouteExtras | undefined {
  const x: RouteExtras = {};
  if (rule.redirect) x.redirect = rule.redirect;
  if (rule.directResponse) x.directResponse = rule.directResponse;
  if (rule.rewrite) x.rewrite = rule.rewrite;
  if (rule.headers) x.headers = rule.headers;
  if (rule.mirrors?.length) x.mirrors = rule.mirrors.map((m) => ({ host: m.host, port: destinationPort(m, host, port, source, ctx), subset: m.subset, percent: m.percent }));
  return Object.keys(x).length ? x : undefined;
}

function destinationPort(d: { host: string; port?: number }, host: string, port: number, source: string, ctx: RouteContext): number {
  if (d.port !== undefined) return d.port;
  if (d.host === host) return port;
  const svc = ctx.services.get(d.host);
  if (svc?.ports.length === 1) return svc.ports[0]!;
  ctx.problem(source, `destination ${d.host} needs a port (it has ${svc ? svc.ports.join(', ') : 'no known ports'}); using ${port}`);
  return port;
}
