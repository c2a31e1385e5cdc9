// RouteConfiguration for one service port: the rules attached to the host (Gateway API routes win
// over VirtualServices, as in Istio's GAMMA support), each match an Envoy route, else one default
// route to the whole service.
import type { RankedRule } from '../../model/networking/gateway-routes.ts';
import type { FaultPolicy, HeaderMatch, RouteMatch, RouteRule, RouteTable, StringMatch } from '../../model/networking/routes.ts';
import { any, duration, encode } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import type { MeshService } from './services.ts';

/** Istio's default retry policy; gRPC clients act on the gRPC-status conditions in it. */
export const DEFAULT_RETRY = { retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', attempts: 2 };
export const FAULT_FILTER = 'envoy.filters.http.fault';

export interface RouteContext {
  services: ReadonlyMap<string, MeshService>;
  /** Reports a destination that cannot be resolved; the route is still built (and fails at runtime). */
  problem: (source: string, reason: string) => void;
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

export function buildRouteConfiguration(host: string, port: number, tables: readonly RouteTable[], ctx: RouteContext): Uint8Array {
  const name = listenerName(host, port);
  const routes: Record<string, unknown>[] = [];
  for (const { rule, source } of rulesFor(port, tables)) {
    const action = routeAction(rule, host, port, source, ctx);
    const matches = rule.matches.length ? rule.matches.filter((m) => m.port === undefined || m.port === port) : [{ headers: [] }];
    for (const m of matches) {
      const r: Record<string, unknown> = { name: rule.name, match: routeMatch(m), route: action };
      if (rule.fault) r.typedPerFilterConfig = { [FAULT_FILTER]: any('envoy.extensions.filters.http.fault.v3.HTTPFault', fault(rule.fault)) };
      routes.push(r);
    }
  }
  // No rule for this port: the whole service, as if nothing were attached.
  if (!routes.length) routes.push({ name: 'default', match: { prefix: '/' }, route: routeAction({ name: 'default', matches: [], destinations: [{ host, port, weight: 1 }] }, host, port, '', ctx) });
  return encode('envoy.config.route.v3.RouteConfiguration', { name, virtualHosts: [{ name, domains: domains(host, port), routes }] });
}

/** The names a client may dial this service by, with and without the port. */
function domains(host: string, port: number): string[] {
  const names = [host];
  const m = /^([^.]+)\.([^.]+)\.svc\.(.+)$/.exec(host);
  if (m) names.push(`${m[1]}.${m[2]}.svc`, `${m[1]}.${m[2]}`);
  return names.flatMap((n) => [n, `${n}:${port}`]);
}

function routeAction(rule: RouteRule, host: string, port: number, source: string, ctx: RouteContext): Record<string, unknown> {
  const clusters = rule.destinations
    .filter((d) => d.weight > 0 || rule.destinations.length === 1)
    .map((d) => ({ name: clusterName(d.host, destinationPort(d, host, port, source, ctx), d.subset), weight: { value: Math.max(d.weight, 1) } }));
  const a: Record<string, unknown> = clusters.length === 1 ? { cluster: clusters[0]!.name } : { weightedClusters: { clusters } };
  // Istio turns Envoy's 15 s default off; gRPC clients read the limit from max_stream_duration.
  a.timeout = duration(rule.timeoutMs ?? 0);
  if (rule.timeoutMs) a.maxStreamDuration = { maxStreamDuration: duration(rule.timeoutMs) };
  const attempts = rule.retry?.attempts ?? DEFAULT_RETRY.attempts;
  if (attempts > 0) {
    const rp: Record<string, unknown> = { retryOn: rule.retry?.retryOn ?? DEFAULT_RETRY.retryOn, numRetries: { value: attempts } };
    if (rule.retry?.perTryTimeoutMs) rp.perTryTimeout = duration(rule.retry.perTryTimeoutMs);
    a.retryPolicy = rp;
  }
  return a;
}

function destinationPort(d: { host: string; port?: number }, host: string, port: number, source: string, ctx: RouteContext): number {
  if (d.port !== undefined) return d.port;
  if (d.host === host) return port;
  const svc = ctx.services.get(d.host);
  if (svc?.ports.length === 1) return svc.ports[0]!;
  ctx.problem(source, `destination ${d.host} needs a port (it has ${svc ? svc.ports.join(', ') : 'no known ports'}); using ${port}`);
  return port;
}

function stringMatcher(s: StringMatch): Record<string, unknown> {
  return 'exact' in s ? { exact: s.exact } : 'prefix' in s ? { prefix: s.prefix } : { safeRegex: { regex: s.regex } };
}

function routeMatch(m: RouteMatch): Record<string, unknown> {
  const out: Record<string, unknown> = !m.path ? { prefix: '/' } : 'exact' in m.path ? { path: m.path.exact } : 'prefix' in m.path ? { prefix: m.path.prefix } : { safeRegex: { regex: m.path.regex } };
  if (m.headers.length) out.headers = m.headers.map(headerMatcher);
  return out;
}

const headerMatcher = (h: HeaderMatch) => (h.value ? { name: h.name, stringMatch: stringMatcher(h.value), invertMatch: h.invert } : { name: h.name, presentMatch: true, invertMatch: h.invert });

function fault(f: FaultPolicy): Record<string, unknown> {
  // Percentages are doubles in Istio: per-million keeps 4 decimal places.
  const pct = (p: number) => ({ numerator: Math.round(p * 10_000), denominator: 'MILLION' });
  const out: Record<string, unknown> = {};
  if (f.delay) out.delay = { fixedDelay: duration(f.delay.ms), percentage: pct(f.delay.percent) };
  if (f.abort) out.abort = { ...(f.abort.grpcStatus !== undefined ? { grpcStatus: f.abort.grpcStatus } : { httpStatus: f.abort.httpStatus }), percentage: pct(f.abort.percent) };
  return out;
}
