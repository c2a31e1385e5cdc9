// RouteConfiguration for one service port, from the port's resolved routes (the model's
// port-routes.ts): each route an Envoy route, its clusters named as Istio names them.
import type { HashKey } from '../../model/networking/destination-rule.ts';
import type { PortRoute, RouteAction, RouteRetry } from '../../model/networking/port-routes.ts';
import { anyMessage } from '../../../api/protos.ts';
import type { FaultPolicy, HeaderMatch, RouteMatch, StringMatch } from '../../model/networking/routes.ts';
import { MAX_DIRECT_BODY } from '../../model/networking/route-actions.ts';
import { any, duration, encode } from './messages.ts';
import { clusterHeaders, directResponse, headerFields, redirect, rewriteFields } from './route-actions.ts';
import { clusterName, listenerName } from './names.ts';
import { buildLocalRateLimit, LOCAL_RATE_LIMIT_FILTER } from './rate-limit.ts';

export const FAULT_FILTER = 'envoy.filters.http.fault';
export const PREVIOUS_HOSTS = 'envoy.retry_host_predicates.previous_hosts';
const PREVIOUS_HOSTS_TYPE = 'envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate';

export function buildRouteConfiguration(host: string, port: number, portRoutes: readonly PortRoute[]): Uint8Array {
  const name = listenerName(host, port);
  const routes = portRoutes.flatMap(bySegments).map((pr) => {
    const x = pr.extras;
    const r: Record<string, unknown> = { name: pr.name, match: routeMatch(pr.match) };
    if (x?.redirect) r.redirect = redirect(x.redirect);
    else if (x?.directResponse) r.directResponse = directResponse(x.directResponse);
    else r.route = { ...routeAction(pr.action), ...rewriteFields(x) };
    if (pr.fault) r.typedPerFilterConfig = { [FAULT_FILTER]: any('envoy.extensions.filters.http.fault.v3.HTTPFault', fault(pr.fault)) };
    if (pr.rateLimit) {
      const rl = buildLocalRateLimit(pr.rateLimit);
      r.typedPerFilterConfig = { ...(r.typedPerFilterConfig as object | undefined), [LOCAL_RATE_LIMIT_FILTER]: rl.filter };
      (r.route as Record<string, unknown>).rateLimits = rl.rateLimits;
    }
    return { ...r, ...headerFields(x?.headers, pr.action) };
  });
  const rc: Record<string, unknown> = { name, virtualHosts: [{ name, domains: domains(host, port), routes }] };
  // Envoy's default limit is 4 KiB; the model allows up to MAX_DIRECT_BODY.
  if (portRoutes.some((pr) => (pr.extras?.directResponse?.body?.length ?? 0) > 4096)) rc.maxDirectResponseBodySizeBytes = { value: MAX_DIRECT_BODY };
  return encode('envoy.config.route.v3.RouteConfiguration', rc);
}

/**
 * A whole-segment prefix ("/a": "/a" and "/a/..." but not "/ab") as two routes every xDS client
 * reads (proxyless gRPC refuses path_separated_prefix): the exact path, then the prefix with its
 * separator, whose prefix replacement keeps the separator.
 */
function bySegments(pr: PortRoute): PortRoute[] {
  const p = pr.match.path;
  if (!p || !('prefix' in p) || !p.segments || p.prefix === '/') return [pr];
  const slash = (r: string) => (r.endsWith('/') ? r : `${r}/`);
  const x = pr.extras;
  const under: PortRoute = { ...pr, match: { ...pr.match, path: { prefix: `${p.prefix}/` } } };
  if (x?.rewrite?.prefix !== undefined) under.extras = { ...x, rewrite: { ...x.rewrite, prefix: slash(x.rewrite.prefix) } };
  if (x?.redirect?.prefix !== undefined) under.extras = { ...x, redirect: { ...x.redirect, prefix: slash(x.redirect.prefix) } };
  return [{ ...pr, match: { ...pr.match, path: { exact: p.prefix } } }, under];
}

/** The names a client may dial this service by, with and without the port. */
function domains(host: string, port: number): string[] {
  const names = [host];
  const m = /^([^.]+)\.([^.]+)\.svc\.(.+)$/.exec(host);
  if (m) names.push(`${m[1]}.${m[2]}.svc`, `${m[1]}.${m[2]}`);
  return names.flatMap((n) => [n, `${n}:${port}`]);
}

function routeAction(action: RouteAction): Record<string, unknown> {
  const clusters = action.clusters.map((c) => ({ name: clusterName(c.host, c.port, c.subset), weight: { value: c.weight }, ...clusterHeaders(c.headers) }));
  const a: Record<string, unknown> = clusters.length === 1 ? { cluster: clusters[0]!.name } : { weightedClusters: { clusters } };
  // Istio turns Envoy's 15 s default off; gRPC clients read the limit from max_stream_duration.
  a.timeout = duration(action.timeoutMs ?? 0);
  if (action.timeoutMs) a.maxStreamDuration = { maxStreamDuration: duration(action.timeoutMs) };
  if (action.hash) a.hashPolicy = [hashPolicy(action.hash)];
  if (action.retry) a.retryPolicy = retryPolicy(action.retry);
  return a;
}

function hashPolicy(k: HashKey): Record<string, unknown> {
  if ('header' in k) return { header: { headerName: k.header } };
  if ('query' in k) return { queryParameter: { name: k.query } };
  if ('sourceIp' in k) return { connectionProperties: { sourceIp: true } };
  const c: Record<string, unknown> = { name: k.cookie.name };
  if (k.cookie.path) c.path = k.cookie.path;
  if (k.cookie.ttlMs !== undefined) c.ttl = duration(k.cookie.ttlMs);
  return { cookie: c };
}

/** As Istio writes it: the previous_hosts predicate (5 tries to find a new endpoint), the backoff base only (Envoy caps it at 10x). */
function retryPolicy(r: RouteRetry): Record<string, unknown> {
  const rp: Record<string, unknown> = { retryOn: r.retryOn, numRetries: { value: r.attempts } };
  if (r.perTryTimeoutMs) rp.perTryTimeout = duration(r.perTryTimeoutMs);
  if (r.codes.length) rp.retriableStatusCodes = r.codes;
  if (r.previousHosts) {
    rp.retryHostPredicate = [{ name: PREVIOUS_HOSTS, typedConfig: anyMessage(`type.googleapis.com/${PREVIOUS_HOSTS_TYPE}`, new Uint8Array()) }];
    rp.hostSelectionRetryMaxAttempts = 5;
  }
  if (r.backoffMs) rp.retryBackOff = { baseInterval: duration(r.backoffMs) };
  return rp;
}

function stringMatcher(s: StringMatch): Record<string, unknown> {
  return 'exact' in s ? { exact: s.exact } : 'prefix' in s ? { prefix: s.prefix } : { safeRegex: { regex: s.regex } };
}

function routeMatch(m: RouteMatch): Record<string, unknown> {
  const out: Record<string, unknown> = !m.path ? { prefix: '/' } : 'exact' in m.path ? { path: m.path.exact } : 'prefix' in m.path ? { prefix: m.path.prefix } : { safeRegex: { regex: m.path.regex } };
  if (m.ignoreCase) out.caseSensitive = { value: false };
  if (m.headers.length) out.headers = m.headers.map(headerMatcher);
  if (m.query?.length) out.queryParameters = m.query.map((q) => (q.value ? { name: q.name, stringMatch: stringMatcher(q.value) } : { name: q.name, presentMatch: true }));
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
