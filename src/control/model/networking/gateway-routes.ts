// gateway.networking.k8s.io HTTPRoute and GRPCRoute with Service parents (GAMMA mesh routing) ->
// route tables. Each match becomes its own rule carrying a precedence rank, because the Gateway API
// orders matches across all routes of a parent by specificity, not by object order. Parents that
// are Gateways are not mesh routes and yield nothing here.
import type { KObject } from '../../../kube/objects.ts';
import { Checker, type NetworkingProblem } from './common.ts';
import { gatewayFilters, type RuleFilters } from './gateway-filters.ts';
import { orderKey, type HeaderMatch, type QueryMatch, type RetryPolicy, type RouteDestination, type RouteMatch, type RouteRule, type RouteTable, type StringMatch } from './routes.ts';
import type { MeshOptions } from './workloads.ts';

export interface RankedRule extends RouteRule {
  /** Compared lexicographically, larger first: path kind, path length, header count. */
  rank: number[];
}

const RULE = ['name', 'matches', 'filters', 'backendRefs', 'timeouts', 'retry', 'sessionPersistence'];
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

export function parseGatewayRoute(obj: KObject, o: MeshOptions): { tables: RouteTable[]; problems: NetworkingProblem[] } {
  const c = new Checker(obj);
  const grpc = obj.kind === 'GRPCRoute';
  const ns = obj.metadata.namespace ?? 'default';
  const spec = c.obj(obj.spec, 'spec') ?? {};
  c.known(spec, 'spec', ['parentRefs', 'hostnames', 'rules']);
  const parents: { host: string; port?: number }[] = [];
  for (const [i, raw] of c.list(spec.parentRefs, 'spec.parentRefs').entries()) {
    const f = `spec.parentRefs[${i}]`;
    const p = c.obj(raw, f);
    if (!p) continue;
    const name = c.str(p.name, `${f}.name`, true);
    const port = c.int(p.port, `${f}.port`, 1, 65535);
    const kind = p.kind ?? 'Gateway';
    const group = p.group ?? 'gateway.networking.k8s.io';
    if (kind !== 'Service' || group !== '') continue; // a Gateway parent: not mesh routing
    const pns = c.str(p.namespace, `${f}.namespace`) ?? ns;
    if (name) parents.push({ host: `${name}.${pns}.svc.${o.clusterDomain}`, port });
  }
  if (!c.list(spec.parentRefs, 'spec.parentRefs').length) c.error('spec.parentRefs', 'at least one parent is required');

  const rules: RankedRule[] = [];
  for (const [i, raw] of c.list(spec.rules, 'spec.rules').entries()) {
    const f = `spec.rules[${i}]`;
    const r = c.obj(raw, f);
    if (!r) continue;
    c.known(r, f, RULE);
    if (r.sessionPersistence !== undefined) c.ignored(`${f}.sessionPersistence`);
    const timeouts = c.obj(r.timeouts, `${f}.timeouts`);
    const timeoutMs = timeouts ? c.duration(timeouts.request, `${f}.timeouts.request`) : undefined;
    const perTry = timeouts ? c.duration(timeouts.backendRequest, `${f}.timeouts.backendRequest`) : undefined;
    const matches = c.list(r.matches, `${f}.matches`);
    const parsed = matches.map((m, j) => (grpc ? grpcMatch(c, m, `${f}.matches[${j}]`) : httpMatch(c, m, `${f}.matches[${j}]`)));
    const destinations = backends(c, r.backendRefs, `${f}.backendRefs`, ns, o, grpc);
    const filters = gatewayFilters(c, r.filters, `${f}.filters`, ns, o, grpc);
    if (!destinations.length && !filters.redirect) {
      c.ignored(`${f}.backendRefs`, 'a rule without backends (fail every request) is not supported: rule ignored');
      continue;
    }
    if (grpc && r.retry !== undefined) c.ignored(`${f}.retry`, 'GRPCRoute rules have no retry: ignored');
    const retry = grpc ? undefined : httpRetry(c, r.retry, `${f}.retry`);
    // As Istio: backendRequest bounds each attempt when the rule retries, else the whole request.
    const base = {
      destinations: filters.redirect ? [] : destinations,
      timeoutMs: (retry || !perTry ? timeoutMs : perTry) || undefined,
      retry: retry && perTry ? { ...retry, perTryTimeoutMs: perTry } : retry,
    };
    const name = typeof r.name === 'string' ? r.name : f;
    if (!matches.length) rules.push({ name, matches: [], rank: [grpc ? 0 : 2, 1, 0], ...base, ...filters.forMatch(grpc ? undefined : { prefix: '/' }, `${f}.filters`) });
    for (const [j, m] of parsed.entries()) if (m) rules.push({ name: `${name}.matches[${j}]`, matches: [m], rank: rankOf(m), ...base, ...filters.forMatch(m.path, `${f}.filters`) });
  }
  if (c.fatal) return { tables: [], problems: c.problems };
  const source = `${obj.kind}/${ns}/${obj.metadata.name}`;
  const order = orderKey(obj);
  return { tables: parents.map((p) => ({ source, host: p.host, port: p.port, rules, api: 'gateway' as const, order })), problems: c.problems };
}

/**
 * HTTPRoute `retry` (Gateway API v1.2): as Istio translates it, connection failures always retry,
 * `codes` add retriable status codes, `attempts` defaults to 2 and 0 turns retries off, `backoff`
 * is the base interval.
 */
function httpRetry(c: Checker, v: unknown, f: string): RetryPolicy | undefined {
  const r = c.obj(v, f);
  if (!r) return undefined;
  c.known(r, f, ['codes', 'attempts', 'backoff']);
  const codes = c.list(r.codes, `${f}.codes`).flatMap((code, i) => c.int(code, `${f}.codes[${i}]`, 400, 599) ?? []);
  const attempts = c.int(r.attempts, `${f}.attempts`, 0, 1000) ?? 2;
  const backoffMs = c.duration(r.backoff, `${f}.backoff`);
  if (attempts === 0) return { attempts: 0 };
  return { attempts, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', ...codes.map(String)].join(','), backoffMs: backoffMs || undefined };
}

/** Gateway API precedence: path kind and length, then a method match, then the header and query match counts. */
function rankOf(m: RouteMatch): number[] {
  const p = m.path;
  const kind = !p ? 0 : 'exact' in p ? 3 : 'prefix' in p ? 2 : 1;
  const len = !p ? 0 : 'exact' in p ? p.exact.length : 'prefix' in p ? p.prefix.length : p.regex.length;
  const method = m.headers.some((h) => h.name === ':method') ? 1 : 0;
  return [kind, len, method, m.headers.length - method, m.query?.length ?? 0];
}

function backends(c: Checker, v: unknown, field: string, ns: string, o: MeshOptions, grpc: boolean): RouteDestination[] {
  const out: RouteDestination[] = [];
  for (const [i, raw] of c.list(v, field).entries()) {
    const f = `${field}[${i}]`;
    const b = c.obj(raw, f);
    if (!b) continue;
    if ((b.kind ?? 'Service') !== 'Service' || (b.group ?? '') !== '') {
      c.error(f, `backend kind ${String(b.group ?? '')}/${String(b.kind)} is not supported (Service only)`);
      continue;
    }
    const bf: RuleFilters | undefined = b.filters === undefined ? undefined : gatewayFilters(c, b.filters, `${f}.filters`, ns, o, grpc, true);
    const name = c.str(b.name, `${f}.name`, true);
    const port = c.int(b.port, `${f}.port`, 1, 65535);
    if (b.port === undefined) c.error(`${f}.port`, 'required for a Service backend');
    const weight = c.int(b.weight, `${f}.weight`, 0, 1_000_000) ?? 1;
    const bns = c.str(b.namespace, `${f}.namespace`) ?? ns;
    if (name && port) out.push({ host: `${name}.${bns}.svc.${o.clusterDomain}`, port, weight, ...(bf?.headers ? { headers: bf.headers } : {}) });
  }
  if (out.length > 1 && out.every((d) => d.weight === 0)) c.error(field, 'all backend weights are 0');
  return out;
}

function headerMatches(c: Checker, v: unknown, field: string): HeaderMatch[] {
  return c.list(v, field).flatMap((raw, i): HeaderMatch[] => {
    const f = `${field}[${i}]`;
    const h = c.obj(raw, f);
    if (!h) return [];
    const name = c.str(h.name, `${f}.name`, true)?.toLowerCase();
    const value = c.str(h.value, `${f}.value`, true);
    const type = h.type ?? 'Exact';
    if (!name || value === undefined) return [];
    if (type === 'Exact') return [{ name, value: { exact: value }, invert: false }];
    if (type === 'RegularExpression') return c.regex(value, `${f}.value`) === undefined ? [] : [{ name, value: { regex: value }, invert: false }];
    c.error(`${f}.type`, 'expected Exact or RegularExpression');
    return [];
  });
}

function httpMatch(c: Checker, raw: unknown, f: string): RouteMatch | undefined {
  const m = c.obj(raw, f);
  if (!m) return undefined;
  c.known(m, f, ['path', 'headers', 'queryParams', 'method']);
  let path: StringMatch | undefined = { prefix: '/' };
  const p = c.obj(m.path, `${f}.path`);
  if (p) {
    const value = c.str(p.value ?? '/', `${f}.path.value`, true);
    if (value !== undefined && !value.startsWith('/') && p.type !== 'RegularExpression') c.error(`${f}.path.value`, 'must start with "/"');
    const type = p.type ?? 'PathPrefix';
    if (value === undefined) path = undefined;
    else if (type === 'Exact') path = { exact: value };
    else if (type === 'PathPrefix') path = value.replace(/\/+$/, '') ? { prefix: value.replace(/\/+$/, ''), segments: true } : { prefix: '/' }; // a trailing "/" is ignored
    else if (type === 'RegularExpression') path = c.regex(value, `${f}.path.value`) === undefined ? undefined : { regex: value };
    else c.error(`${f}.path.type`, 'expected Exact, PathPrefix or RegularExpression');
  }
  const headers = headerMatches(c, m.headers, `${f}.headers`);
  if (m.method !== undefined) {
    const method = c.str(m.method, `${f}.method`, true);
    if (method !== undefined && !/^[A-Z]+$/.test(method)) c.error(`${f}.method`, 'expected an HTTP method (GET, POST, ...)');
    else if (method !== undefined) headers.unshift({ name: ':method', value: { exact: method }, invert: false });
  }
  const query = queryMatches(c, m.queryParams, `${f}.queryParams`);
  return query.length ? { path, headers, query } : { path, headers };
}

function queryMatches(c: Checker, v: unknown, field: string): QueryMatch[] {
  return c.list(v, field).flatMap((raw, i): QueryMatch[] => {
    const f = `${field}[${i}]`;
    const q = c.obj(raw, f);
    if (!q) return [];
    c.known(q, f, ['type', 'name', 'value']);
    const name = c.str(q.name, `${f}.name`, true);
    const value = c.str(q.value, `${f}.value`, true);
    const type = q.type ?? 'Exact';
    if (!name || value === undefined) return [];
    if (type === 'Exact') return [{ name, value: { exact: value } }];
    if (type === 'RegularExpression') return c.regex(value, `${f}.value`) === undefined ? [] : [{ name, value: { regex: value } }];
    c.error(`${f}.type`, 'expected Exact or RegularExpression');
    return [];
  });
}

function grpcMatch(c: Checker, raw: unknown, f: string): RouteMatch | undefined {
  const m = c.obj(raw, f);
  if (!m) return undefined;
  c.known(m, f, ['method', 'headers']);
  let path: StringMatch | undefined;
  const meth = c.obj(m.method, `${f}.method`);
  if (meth) {
    const service = c.str(meth.service, `${f}.method.service`);
    const method = c.str(meth.method, `${f}.method.method`);
    const type = meth.type ?? 'Exact';
    if (!service && !method) c.error(`${f}.method`, 'service or method is required');
    else if (type === 'Exact') {
      if (service && !/^[A-Za-z_][A-Za-z0-9_.]*$/.test(service)) c.error(`${f}.method.service`, 'invalid service name');
      if (method && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(method)) c.error(`${f}.method.method`, 'invalid method name');
      path = service && method ? { exact: `/${service}/${method}` } : service ? { prefix: `/${service}/` } : { regex: `/[^/]+/${escapeRe(method!)}` };
    } else if (type === 'RegularExpression') {
      const re = `/${service ?? '[^/]+'}/${method ?? '[^/]+'}`;
      if (c.regex(re, `${f}.method`) !== undefined) path = { regex: re };
    } else c.error(`${f}.method.type`, 'expected Exact or RegularExpression');
  }
  return { path, headers: headerMatches(c, m.headers, `${f}.headers`) };
}
