// Envoy Gateway's BackendTrafficPolicy (gateway.envoyproxy.io/v1alpha1), its local rate limit only:
// `spec.rateLimit.local.rules[]` of clientSelectors and a limit, attached by `spec.targetRefs` to
// HTTPRoutes, GRPCRoutes (their rules only: per route) or Services (every route of the host). As in
// Envoy Gateway, a rule without selectors is the route's default bucket (at most one; none: no
// default limit), and each route has its own buckets.
//
// Per source identity, weft's extension of clientSelectors: `sourcePrincipal`, shaped like
// `sourceCIDR` ({type: Exact, value: <SPIFFE id>} or {type: Distinct}: one bucket per distinct
// client identity). The peer's identity is what the waypoint authenticated on the HBONE tunnel, so
// unlike a header the client cannot choose it. On the wire it is Envoy's `metadata` rate-limit
// action on Istio's `istio_authn` dynamic metadata key `source.principal`.
//
// Whatever weft cannot honour (Global limits, cost, shared, shadowMode, Month/Year units, unknown
// fields, a Gateway target, a sectionName) makes the whole policy a problem: it is reported and
// skipped, never read as "no limit" for only part of it.
import { parseCidr } from '../../../util/cidr.ts';
import type { KObject } from '../../../kube/objects.ts';
import { Checker, type NetworkingProblem } from './common.ts';
import { orderKey, type StringMatch } from './routes.ts';

export const BACKEND_TRAFFIC_POLICY = 'BackendTrafficPolicy';
export const ENVOY_GATEWAY_VERSION = /^gateway\.envoyproxy\.io\/v1alpha1$/;

export type RateLimitSelector =
  | { type: 'header'; name: string; value: StringMatch; invert: boolean }
  | { type: 'distinctHeader'; name: string }
  | { type: 'method'; methods: string[] }
  | { type: 'path'; value: StringMatch; invert: boolean }
  | { type: 'sourceCIDR'; network: string; prefixLen: number; v6: boolean; distinct: boolean }
  | { type: 'sourcePrincipal'; value?: string };

export interface RateLimitValue {
  requests: number;
  /** The fill interval: the unit in milliseconds. */
  intervalMs: number;
}

export interface RateLimitRule {
  /** All must hold (the rule's clientSelectors, flattened). */
  selectors: RateLimitSelector[];
  limit: RateLimitValue;
}

export interface LocalRateLimitPolicy {
  /** "BackendTrafficPolicy/ns/name". */
  source: string;
  /** The rule without clientSelectors, if any. */
  default?: RateLimitValue;
  /** The rules with clientSelectors, in order. */
  rules: RateLimitRule[];
}

export interface PolicyTarget {
  kind: 'HTTPRoute' | 'GRPCRoute' | 'Service';
  namespace: string;
  name: string;
  /** Where it was named, for problems. */
  field: string;
}

export interface ParsedTrafficPolicy {
  policy: LocalRateLimitPolicy;
  targets: PolicyTarget[];
  order: string;
}

const UNIT_MS: Record<string, number> = { Second: 1000, Minute: 60_000, Hour: 3_600_000, Day: 86_400_000 };
const SPEC = ['targetRef', 'targetRefs', 'targetSelectors', 'rateLimit'];
/** The other features of the kind: valid Envoy Gateway, not acted on by weft (reported, the rate limit still applies). */
const OTHER_FEATURES = ['loadBalancer', 'proxyProtocol', 'tcpKeepalive', 'healthCheck', 'circuitBreaker', 'retry', 'timeout', 'connection', 'dns', 'http2', 'faultInjection', 'useClientProtocol', 'compression', 'responseOverride', 'httpUpgrade', 'requestBuffer', 'telemetry', 'routingType', 'mergeType'];
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

export function parseBackendTrafficPolicy(obj: KObject): { parsed?: ParsedTrafficPolicy; problems: NetworkingProblem[] } {
  const c = new Checker(obj);
  const ns = obj.metadata.namespace ?? 'default';
  const spec = c.obj(obj.spec, 'spec') ?? {};
  for (const k of Object.keys(spec)) if (!SPEC.includes(k)) c.ignored(`spec.${k}`, OTHER_FEATURES.includes(k) ? 'not supported by weft: ignored (the rate limit still applies)' : 'unknown field: ignored');

  const targets: PolicyTarget[] = [];
  const refs = [...(spec.targetRef !== undefined ? [{ raw: spec.targetRef, f: 'spec.targetRef' }] : []), ...c.list(spec.targetRefs, 'spec.targetRefs').map((raw, i) => ({ raw, f: `spec.targetRefs[${i}]` }))];
  for (const { raw, f } of refs) {
    const t = c.obj(raw, f);
    if (!t) continue;
    for (const k of Object.keys(t)) if (!['group', 'kind', 'name', 'sectionName'].includes(k)) c.error(`${f}.${k}`, 'unknown field');
    const kind = c.str(t.kind, `${f}.kind`, true);
    const name = c.str(t.name, `${f}.name`, true);
    const group = t.group ?? (kind === 'Service' ? '' : 'gateway.networking.k8s.io');
    if (t.sectionName !== undefined) c.error(`${f}.sectionName`, 'not supported by weft: the policy would apply to more than the section');
    if (!kind || !name) continue;
    if ((kind === 'HTTPRoute' || kind === 'GRPCRoute') && group === 'gateway.networking.k8s.io') targets.push({ kind, namespace: ns, name, field: f });
    else if (kind === 'Service' && group === '') targets.push({ kind, namespace: ns, name, field: f });
    else if (kind === 'Gateway') c.error(`${f}.kind`, 'a Gateway target is not supported by weft (target the HTTPRoutes, GRPCRoutes or Services instead)');
    else c.error(`${f}`, `target ${String(group)}/${kind} is not supported (HTTPRoute, GRPCRoute or Service)`);
  }
  if (spec.targetSelectors !== undefined) c.error('spec.targetSelectors', 'not supported by weft (use targetRefs)');
  if (!refs.length && spec.targetSelectors === undefined) c.error('spec.targetRefs', 'at least one target is required');

  const policy = rateLimit(c, spec.rateLimit, `${obj.kind}/${ns}/${obj.metadata.name}`);
  if (c.fatal || !policy) return { problems: c.problems };
  return { parsed: { policy, targets, order: orderKey(obj) }, problems: c.problems };
}

function rateLimit(c: Checker, raw: unknown, source: string): LocalRateLimitPolicy | undefined {
  const f = 'spec.rateLimit';
  const rl = c.obj(raw, f);
  if (!rl) return raw === undefined ? c.error(f, 'weft reads only the local rate limit of a BackendTrafficPolicy: without rateLimit it has nothing to apply') : undefined;
  for (const k of Object.keys(rl)) if (!['type', 'local', 'global'].includes(k)) c.error(`${f}.${k}`, 'unknown field');
  if (rl.global !== undefined) c.error(`${f}.global`, 'global rate limits (a rate limit service) are not supported by weft');
  if (rl.type !== undefined && rl.type !== 'Local') c.error(`${f}.type`, rl.type === 'Global' ? 'global rate limits (a rate limit service) are not supported by weft' : 'expected Local');
  const local = c.obj(rl.local, `${f}.local`);
  if (!local) return rl.local === undefined ? c.error(`${f}.local`, 'required') : undefined;
  for (const k of Object.keys(local)) if (k !== 'rules') c.error(`${f}.local.${k}`, 'unknown field');
  const rawRules = c.list(local.rules, `${f}.local.rules`);
  if (rawRules.length > 16) c.error(`${f}.local.rules`, 'at most 16 rules');
  const out: LocalRateLimitPolicy = { source, rules: [] };
  const fields: string[] = [];
  rawRules.forEach((raw, i) => {
    const rf = `${f}.local.rules[${i}]`;
    const r = c.obj(raw, rf);
    if (!r) return;
    for (const k of Object.keys(r)) {
      if (k === 'cost' || k === 'shared' || k === 'shadowMode') c.error(`${rf}.${k}`, 'not supported by weft');
      else if (k !== 'clientSelectors' && k !== 'limit') c.error(`${rf}.${k}`, 'unknown field');
    }
    const limit = limitValue(c, r.limit, `${rf}.limit`);
    const sels = c.list(r.clientSelectors, `${rf}.clientSelectors`);
    if (sels.length > 8) c.error(`${rf}.clientSelectors`, 'at most 8 selectors');
    const selectors = sels.flatMap((s, j) => selector(c, s, `${rf}.clientSelectors[${j}]`));
    if (!limit) return;
    if (!sels.length) {
      if (out.default) c.error(rf, 'a local rate limit can have only one rule without clientSelectors');
      out.default = limit;
    } else {
      out.rules.push({ selectors, limit });
      fields.push(`${rf}.limit.unit`);
    }
  });
  if (!out.default && !out.rules.length && !c.fatal) c.error(`${f}.local.rules`, 'no rules: nothing to limit');
  // Envoy needs each descriptor's fill interval to be a multiple of the default bucket's.
  const base = out.default?.intervalMs ?? 1000;
  out.rules.forEach((r, i) => {
    if (r.limit.intervalMs % base !== 0) c.error(fields[i]!, "must be a multiple of the default rule's unit (Envoy's local rate limit requires it)");
  });
  return out;
}

function limitValue(c: Checker, raw: unknown, f: string): RateLimitValue | undefined {
  const l = c.obj(raw, f);
  if (!l) return c.error(f, 'required');
  for (const k of Object.keys(l)) if (k !== 'requests' && k !== 'unit') c.error(`${f}.${k}`, 'unknown field');
  const requests = c.int(l.requests, `${f}.requests`, 0, 0xffffffff);
  if (l.requests === undefined) c.error(`${f}.requests`, 'required');
  const unit = c.str(l.unit, `${f}.unit`, true);
  if (unit === 'Month' || unit === 'Year') return c.error(`${f}.unit`, `${unit} is not supported by weft's local rate limit (Second, Minute, Hour or Day)`);
  if (unit !== undefined && !UNIT_MS[unit]) return c.error(`${f}.unit`, 'expected Second, Minute, Hour or Day');
  if (requests === undefined || !unit) return undefined;
  return { requests, intervalMs: UNIT_MS[unit]! };
}

function selector(c: Checker, raw: unknown, f: string): RateLimitSelector[] {
  const s = c.obj(raw, f);
  if (!s) return [];
  const out: RateLimitSelector[] = [];
  for (const k of Object.keys(s)) if (!['headers', 'methods', 'path', 'sourceCIDR', 'sourcePrincipal'].includes(k)) c.error(`${f}.${k}`, 'unknown field');
  if (s.headers === undefined && s.methods === undefined && s.path === undefined && s.sourceCIDR === undefined && s.sourcePrincipal === undefined)
    c.error(f, 'at least one of headers, methods, path, sourceCIDR or sourcePrincipal must be specified');
  const headers = c.list(s.headers, `${f}.headers`);
  if (headers.length > 16) c.error(`${f}.headers`, 'at most 16 headers');
  headers.forEach((raw, i) => {
    const hf = `${f}.headers[${i}]`;
    const h = c.obj(raw, hf);
    if (!h) return;
    for (const k of Object.keys(h)) if (!['name', 'type', 'value', 'invert'].includes(k)) c.error(`${hf}.${k}`, 'unknown field');
    const name = c.str(h.name, `${hf}.name`, true)?.toLowerCase();
    if (name !== undefined && (name.length > 256 || !/^:?[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(name))) c.error(`${hf}.name`, 'not a header name');
    const type = h.type ?? 'Exact';
    const invert = h.invert === true;
    if (h.invert !== undefined && typeof h.invert !== 'boolean') c.error(`${hf}.invert`, 'expected a boolean');
    if (type === 'Distinct') {
      if (h.value !== undefined) c.error(`${hf}.value`, 'must not be set when type is Distinct');
      if (invert) c.error(`${hf}.invert`, 'must not be set when type is Distinct');
      if (name) out.push({ type: 'distinctHeader', name });
      return;
    }
    const value = c.str(h.value, `${hf}.value`, true);
    if (value !== undefined && value.length > 1024) c.error(`${hf}.value`, 'longer than 1024 characters');
    if (type === 'Exact') {
      if (name && value !== undefined) out.push({ type: 'header', name, value: { exact: value }, invert });
    } else if (type === 'RegularExpression') {
      if (name && value !== undefined && c.regex(value, `${hf}.value`) !== undefined) out.push({ type: 'header', name, value: { regex: value }, invert });
    } else c.error(`${hf}.type`, 'expected Exact, RegularExpression or Distinct');
  });
  if (s.methods !== undefined) {
    const methods: string[] = [];
    c.list(s.methods, `${f}.methods`).forEach((raw, i) => {
      const mf = `${f}.methods[${i}]`;
      const m = c.obj(raw, mf);
      if (!m) return;
      for (const k of Object.keys(m)) if (k !== 'value' && k !== 'invert') c.error(`${mf}.${k}`, 'unknown field');
      if (m.invert === true) c.error(`${mf}.invert`, 'not supported by weft');
      const v = c.str(m.value, `${mf}.value`, true);
      if (v !== undefined && !METHODS.has(v)) c.error(`${mf}.value`, `expected one of ${[...METHODS].join(', ')}`);
      else if (v) methods.push(v);
    });
    if (methods.length) out.push({ type: 'method', methods });
  }
  const p = c.obj(s.path, `${f}.path`);
  if (p) {
    for (const k of Object.keys(p)) if (!['type', 'value', 'invert'].includes(k)) c.error(`${f}.path.${k}`, 'unknown field');
    const value = c.str(p.value ?? '/', `${f}.path.value`, true);
    const type = p.type ?? 'PathPrefix';
    const invert = p.invert === true;
    if (value !== undefined) {
      if (type === 'Exact') out.push({ type: 'path', value: { exact: value }, invert });
      else if (type === 'PathPrefix') out.push({ type: 'path', value: { prefix: value }, invert });
      else if (type === 'RegularExpression') {
        if (c.regex(value, `${f}.path.value`) !== undefined) out.push({ type: 'path', value: { regex: value }, invert });
      } else c.error(`${f}.path.type`, 'expected Exact, PathPrefix or RegularExpression');
    }
  }
  const cidr = c.obj(s.sourceCIDR, `${f}.sourceCIDR`);
  if (cidr) {
    for (const k of Object.keys(cidr)) if (k !== 'type' && k !== 'value') c.error(`${f}.sourceCIDR.${k}`, 'unknown field');
    const type = cidr.type ?? 'Exact';
    if (type !== 'Exact' && type !== 'Distinct') c.error(`${f}.sourceCIDR.type`, 'expected Exact or Distinct');
    const text = c.str(cidr.value, `${f}.sourceCIDR.value`, true);
    const parsed = text !== undefined ? parseCidr(text) : undefined;
    if (text !== undefined && (!parsed || !text.includes('/'))) c.error(`${f}.sourceCIDR.value`, `${JSON.stringify(text)} is not a CIDR (e.g. 10.0.0.0/8)`);
    else if (parsed) out.push({ type: 'sourceCIDR', ...parsed, distinct: type === 'Distinct' });
  }
  const principal = c.obj(s.sourcePrincipal, `${f}.sourcePrincipal`);
  if (principal) {
    for (const k of Object.keys(principal)) if (k !== 'type' && k !== 'value') c.error(`${f}.sourcePrincipal.${k}`, 'unknown field');
    const type = principal.type ?? 'Exact';
    if (type === 'Distinct') {
      if (principal.value !== undefined) c.error(`${f}.sourcePrincipal.value`, 'must not be set when type is Distinct');
      out.push({ type: 'sourcePrincipal' });
    } else if (type === 'Exact') {
      const v = c.str(principal.value, `${f}.sourcePrincipal.value`, true);
      if (v !== undefined && !/^spiffe:\/\/[^/]+\/.+/.test(v)) c.error(`${f}.sourcePrincipal.value`, 'expected a SPIFFE id (spiffe://<trust domain>/ns/<ns>/sa/<sa>)');
      else if (v) out.push({ type: 'sourcePrincipal', value: v });
    } else c.error(`${f}.sourcePrincipal.type`, 'expected Exact or Distinct');
  }
  return out;
}
