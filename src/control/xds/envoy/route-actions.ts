// The parts of an Envoy route beyond matching and choosing clusters: redirect, direct response,
// rewrites, header changes (route and weighted-cluster level) and mirror policies, from the
// model's route extras (port-routes.ts), written as Istio writes them.
import type { RouteAction, RouteExtras } from '../../model/networking/port-routes.ts';
import type { DirectResponsePolicy, HeaderOps, HeaderPolicy, RedirectPolicy } from '../../model/networking/routes.ts';
import { clusterName } from './names.ts';

const REDIRECT_CODE: Record<number, string> = { 301: 'MOVED_PERMANENTLY', 302: 'FOUND', 303: 'SEE_OTHER', 307: 'TEMPORARY_REDIRECT', 308: 'PERMANENT_REDIRECT' };

export function redirect(r: RedirectPolicy): Record<string, unknown> {
  const out: Record<string, unknown> = { responseCode: REDIRECT_CODE[r.code] ?? 'MOVED_PERMANENTLY' };
  if (r.scheme) out.schemeRedirect = r.scheme;
  if (r.host) out.hostRedirect = r.host;
  if (r.port) out.portRedirect = r.port;
  if (r.path !== undefined) out.pathRedirect = r.path;
  else if (r.prefix !== undefined) out.prefixRewrite = r.prefix;
  else if (r.regex) out.regexRewrite = { pattern: { regex: r.regex.pattern }, substitution: r.regex.substitution };
  return out;
}

export function directResponse(d: DirectResponsePolicy): Record<string, unknown> {
  if (!d.body) return { status: d.status };
  const text = Buffer.from(d.body).toString('utf8');
  // Valid UTF-8 goes as a string (readable in config dumps), anything else as bytes.
  return { status: d.status, body: Buffer.from(text).equals(Buffer.from(d.body)) ? { inlineString: text } : { inlineBytes: d.body } };
}

export function rewriteFields(x: RouteExtras | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (x?.rewrite?.prefix !== undefined) out.prefixRewrite = x.rewrite.prefix;
  if (x?.rewrite?.regex) out.regexRewrite = { pattern: { regex: x.rewrite.regex.pattern }, substitution: x.rewrite.regex.substitution };
  if (x?.rewrite?.host !== undefined) out.hostRewriteLiteral = x.rewrite.host;
  if (x?.mirrors?.length) {
    out.requestMirrorPolicies = x.mirrors.map((m) => ({
      cluster: clusterName(m.host, m.port, m.subset),
      // Percentages are doubles in Istio: per-million keeps 4 decimal places.
      runtimeFraction: { defaultValue: { numerator: Math.round(m.percent * 10_000), denominator: 'MILLION' } },
    }));
  }
  return out;
}

const add = (o: HeaderOps) => [
  ...o.set.map((h) => ({ header: { key: h.name, value: h.value }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' })),
  ...o.add.map((h) => ({ header: { key: h.name, value: h.value }, appendAction: 'APPEND_IF_EXISTS_OR_ADD' })),
];

function fields(p: HeaderPolicy | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (p?.request?.set.length || p?.request?.add.length) out.requestHeadersToAdd = add(p.request);
  if (p?.request?.remove.length) out.requestHeadersToRemove = p.request.remove;
  if (p?.response?.set.length || p?.response?.add.length) out.responseHeadersToAdd = add(p.response);
  if (p?.response?.remove.length) out.responseHeadersToRemove = p.response.remove;
  return out;
}

/** A weighted cluster's own header changes. */
export const clusterHeaders = (p: HeaderPolicy | undefined) => fields(p);

/** The route's header changes; a single destination's own are folded in (it has no weighted-cluster level), after the route's as Istio does. */
export function headerFields(route: HeaderPolicy | undefined, action: RouteAction): Record<string, unknown> {
  const single = action.clusters.length === 1 ? action.clusters[0]!.headers : undefined;
  if (!single) return fields(route);
  const merge = (a?: HeaderOps, b?: HeaderOps): HeaderOps | undefined =>
    a || b ? { set: [...(a?.set ?? []), ...(b?.set ?? [])], add: [...(a?.add ?? []), ...(b?.add ?? [])], remove: [...(a?.remove ?? []), ...(b?.remove ?? [])] } : undefined;
  return fields({ request: merge(route?.request, single.request), response: merge(route?.response, single.response) });
}
