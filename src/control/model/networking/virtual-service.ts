// networking.istio.io VirtualService -> route tables for mesh traffic (HTTP routes only: gRPC is
// HTTP/2). A VirtualService bound only to ingress gateways (no "mesh" in `gateways`) does not
// apply to the mesh and yields nothing.
import type { KObject } from '../../../kube/objects.ts';
import { Checker, isObj, qualifyHost, type NetworkingProblem } from './common.ts';
import { checkHeaderOps, checkPattern, headerPolicy, MAX_DIRECT_BODY, mergeHost, REDIRECT_CODES } from './route-actions.ts';
import {
  GRPC_STATUS, orderKey, RETRY_CONDITIONS, UNSERVED_RETRY_CONDITIONS, type DirectResponsePolicy, type FaultPolicy, type HeaderMatch, type HeaderOps, type HeaderPolicy, type MirrorPolicy, type QueryMatch,
  type RedirectPolicy, type RetryPolicy, type RewritePolicy, type RouteDestination, type RouteMatch, type RouteRule, type RouteTable, type StringMatch,
} from './routes.ts';
import type { MeshOptions } from './workloads.ts';

const SPEC = ['hosts', 'gateways', 'http', 'tcp', 'tls', 'exportTo'];
const HTTP = ['name', 'match', 'route', 'timeout', 'retries', 'fault', 'headers', 'mirror', 'mirrorPercentage', 'mirrors', 'corsPolicy', 'rewrite', 'redirect', 'directResponse', 'delegate'];
const MATCH = ['name', 'uri', 'headers', 'withoutHeaders', 'port', 'method', 'authority', 'scheme', 'queryParams', 'ignoreUriCase', 'sourceLabels', 'gateways', 'sourceNamespace', 'statPrefix'];
const UNSUPPORTED_ACTIONS = ['delegate'];
/** Valid, not applied by weft yet: reported, the rest of the rule still routes. */
const IGNORED = ['corsPolicy'];

export function parseVirtualService(obj: KObject, o: MeshOptions): { tables: RouteTable[]; problems: NetworkingProblem[] } {
  const c = new Checker(obj);
  const ns = obj.metadata.namespace ?? 'default';
  const spec = c.obj(obj.spec, 'spec') ?? {};
  c.known(spec, 'spec', SPEC);
  const hosts = c.list(spec.hosts, 'spec.hosts').flatMap((h, i) => c.str(h, `spec.hosts[${i}]`, true) ?? []);
  if (!hosts.length) c.error('spec.hosts', 'at least one host is required');
  for (const [i, h] of hosts.entries()) if (h.includes('*')) c.ignored(`spec.hosts[${i}]`, 'wildcard hosts are not supported for mesh routing: ignored');
  const gateways = c.list(spec.gateways, 'spec.gateways').flatMap((g, i) => c.str(g, `spec.gateways[${i}]`, true) ?? []);
  const forMesh = gateways.length === 0 || gateways.includes('mesh');
  if (spec.tcp !== undefined) c.ignored('spec.tcp', 'TCP routes are not served to proxyless clients: ignored');
  if (spec.tls !== undefined) c.ignored('spec.tls', 'TLS routes are not served to proxyless clients: ignored');

  const rules: RouteRule[] = [];
  for (const [i, raw] of c.list(spec.http, 'spec.http').entries()) {
    const r = parseHttpRoute(c, raw, `spec.http[${i}]`, ns, o);
    if (r) rules.push(r);
  }
  if (c.fatal || !forMesh) return { tables: [], problems: c.problems };
  const source = `VirtualService/${ns}/${obj.metadata.name}`;
  const order = orderKey(obj);
  const tables = hosts.filter((h) => !h.includes('*')).map((h) => ({ source, host: qualifyHost(h, ns, o), rules, api: 'istio' as const, order }));
  return { tables, problems: c.problems };
}

function parseHttpRoute(c: Checker, raw: unknown, field: string, ns: string, o: MeshOptions): RouteRule | undefined {
  const r = c.obj(raw, field);
  if (!r) return undefined;
  c.known(r, field, HTTP);
  for (const a of UNSUPPORTED_ACTIONS) if (r[a] !== undefined) return c.error(`${field}.${a}`, 'not supported by weft');
  for (const k of IGNORED) if (r[k] !== undefined) c.ignored(`${field}.${k}`);
  const matches = c.list(r.match, `${field}.match`).flatMap((m, j) => parseMatch(c, m, `${field}.match[${j}]`) ?? []);
  const dests = c.list(r.route, `${field}.route`);
  const local = r.redirect !== undefined || r.directResponse !== undefined;
  if (r.redirect !== undefined && r.directResponse !== undefined) return c.error(`${field}.directResponse`, 'a rule cannot both redirect and respond directly');
  if (local && dests.length) return c.error(`${field}.route`, `a rule with ${r.redirect !== undefined ? 'redirect' : 'directResponse'} cannot also route`);
  if (local && (r.rewrite !== undefined || r.mirror !== undefined || r.mirrors !== undefined)) return c.error(`${field}.${r.rewrite !== undefined ? 'rewrite' : 'mirror'}`, 'not allowed on a rule that answers locally');
  if (!dests.length && !local) return c.error(`${field}.route`, 'at least one destination is required');
  const destinations: RouteDestination[] = [];
  for (const [j, d] of dests.entries()) {
    const df = `${field}.route[${j}]`;
    const rd = c.obj(d, df);
    if (!rd) continue;
    const dest = c.obj(rd.destination, `${df}.destination`);
    if (!dest) {
      c.error(`${df}.destination`, 'required');
      continue;
    }
    const host = c.str(dest.host, `${df}.destination.host`, true);
    const subset = c.str(dest.subset, `${df}.destination.subset`);
    const portObj = c.obj(dest.port, `${df}.destination.port`);
    const port = portObj ? c.int(portObj.number, `${df}.destination.port.number`, 1, 65535) : undefined;
    const weight = c.int(rd.weight, `${df}.weight`, 0, 100);
    c.known(rd, df, ['destination', 'weight', 'headers']);
    const headers = parseHeaders(c, rd.headers, `${df}.headers`);
    if (headers.host !== undefined) c.error(`${df}.headers.request.set.host`, 'the authority can only be rewritten for the whole rule (rewrite.authority)');
    if (host) destinations.push({ host: qualifyHost(host, ns, o), port, subset, weight: weight ?? (dests.length === 1 ? 100 : 0), ...(headers.policy ? { headers: headers.policy } : {}) });
  }
  if (destinations.length > 1 && destinations.every((d) => d.weight === 0)) c.error(`${field}.route`, 'weights are required when splitting between destinations');
  const rule: RouteRule = { name: typeof r.name === 'string' ? r.name : `${field}`, matches, destinations };
  rule.timeoutMs = c.duration(r.timeout, `${field}.timeout`);
  rule.retry = parseRetries(c, r.retries, `${field}.retries`);
  rule.fault = parseFault(c, r.fault, `${field}.fault`);
  const headers = parseHeaders(c, r.headers, `${field}.headers`);
  const rewrite = mergeHost(c, parseRewrite(c, r.rewrite, `${field}.rewrite`), headers.host, `${field}.headers.request.set.host`);
  if (headers.policy) rule.headers = headers.policy;
  if (rewrite) rule.rewrite = rewrite;
  const redirect = parseRedirect(c, r.redirect, `${field}.redirect`);
  if (redirect) rule.redirect = redirect;
  const direct = parseDirectResponse(c, r.directResponse, `${field}.directResponse`);
  if (direct) rule.directResponse = direct;
  const mirrors = parseMirrors(c, r, field, ns, o);
  if (mirrors.length) rule.mirrors = mirrors;
  return rule;
}

function stringMap(c: Checker, v: unknown, field: string): { name: string; value: string }[] {
  const m = c.obj(v, field) ?? {};
  return Object.entries(m).flatMap(([name, value]) => (typeof value === 'string' ? [{ name: name.toLowerCase(), value }] : (c.error(`${field}.${name}`, 'expected a string') ?? [])));
}

function headerOps(c: Checker, v: unknown, field: string): HeaderOps | undefined {
  const o = c.obj(v, field);
  if (!o) return undefined;
  c.known(o, field, ['set', 'add', 'remove']);
  const remove = c.list(o.remove, `${field}.remove`).flatMap((n, i) => c.str(n, `${field}.remove[${i}]`, true)?.toLowerCase() ?? []);
  return { set: stringMap(c, o.set, `${field}.set`), add: stringMap(c, o.add, `${field}.add`), remove };
}

/** VirtualService `headers` (rule or destination): request and response changes; a Host set is returned apart. */
function parseHeaders(c: Checker, v: unknown, field: string): { policy?: HeaderPolicy; host?: string } {
  const h = c.obj(v, field);
  if (!h) return {};
  c.known(h, field, ['request', 'response']);
  const request = headerOps(c, h.request, `${field}.request`);
  const response = headerOps(c, h.response, `${field}.response`);
  const host = request ? checkHeaderOps(c, request, `${field}.request`, true).host : undefined;
  if (response) checkHeaderOps(c, response, `${field}.response`, false);
  return { policy: headerPolicy(request, response), host };
}

function parseRewrite(c: Checker, v: unknown, field: string): RewritePolicy | undefined {
  const r = c.obj(v, field);
  if (!r) return undefined;
  c.known(r, field, ['uri', 'authority', 'uriRegexRewrite']);
  const out: RewritePolicy = {};
  const uri = c.str(r.uri, `${field}.uri`);
  const re = c.obj(r.uriRegexRewrite, `${field}.uriRegexRewrite`);
  if (uri !== undefined && re) return c.error(`${field}.uriRegexRewrite`, 'uri and uriRegexRewrite cannot both be set');
  if (uri !== undefined) out.prefix = uri;
  if (re) {
    c.known(re, `${field}.uriRegexRewrite`, ['match', 'rewrite']);
    const p = checkPattern(c, c.str(re.match, `${field}.uriRegexRewrite.match`), c.str(re.rewrite, `${field}.uriRegexRewrite.rewrite`), `${field}.uriRegexRewrite`);
    if (p) out.regex = p;
  }
  const authority = c.str(r.authority, `${field}.authority`, r.authority !== undefined);
  if (authority !== undefined) out.host = authority;
  return Object.keys(out).length ? out : undefined;
}

function parseRedirect(c: Checker, v: unknown, field: string): RedirectPolicy | undefined {
  const r = c.obj(v, field);
  if (!r) return undefined;
  c.known(r, field, ['uri', 'authority', 'port', 'derivePort', 'scheme', 'redirectCode']);
  const code = c.int(r.redirectCode, `${field}.redirectCode`, 0, 999) ?? 301;
  if (!(REDIRECT_CODES as readonly number[]).includes(code)) return c.error(`${field}.redirectCode`, `expected one of ${REDIRECT_CODES.join(', ')}`);
  const out: RedirectPolicy = { code };
  const uri = c.str(r.uri, `${field}.uri`);
  if (uri !== undefined) out.path = uri; // Istio: the whole path, whatever the match
  const authority = c.str(r.authority, `${field}.authority`, r.authority !== undefined);
  if (authority !== undefined) out.host = authority;
  const scheme = c.str(r.scheme, `${field}.scheme`, r.scheme !== undefined);
  if (scheme !== undefined && !/^[a-z][a-z0-9+.-]*$/i.test(scheme)) return c.error(`${field}.scheme`, 'not a URI scheme');
  if (scheme !== undefined) out.scheme = scheme.toLowerCase();
  if (r.port !== undefined && r.derivePort !== undefined) return c.error(`${field}.derivePort`, 'port and derivePort cannot both be set');
  const port = c.int(r.port, `${field}.port`, 1, 65535);
  if (port !== undefined) out.port = port;
  if (r.derivePort === 'FROM_PROTOCOL_DEFAULT') out.port = out.scheme === 'https' ? 443 : 80;
  else if (r.derivePort !== undefined && r.derivePort !== 'FROM_REQUEST_PORT') return c.error(`${field}.derivePort`, 'expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT');
  return out;
}

function parseDirectResponse(c: Checker, v: unknown, field: string): DirectResponsePolicy | undefined {
  const d = c.obj(v, field);
  if (!d) return undefined;
  c.known(d, field, ['status', 'body']);
  const status = c.int(d.status, `${field}.status`, 200, 599);
  if (status === undefined) return d.status === undefined ? c.error(`${field}.status`, 'required') : undefined;
  const b = c.obj(d.body, `${field}.body`);
  if (!b) return { status };
  c.known(b, `${field}.body`, ['string', 'bytes']);
  if ((b.string === undefined) === (b.bytes === undefined)) return c.error(`${field}.body`, 'expected exactly one of string, bytes');
  let body: Uint8Array | undefined;
  if (b.string !== undefined) {
    const s = c.str(b.string, `${field}.body.string`);
    if (s !== undefined) body = Buffer.from(s);
  } else {
    const s = c.str(b.bytes, `${field}.body.bytes`);
    if (s !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return c.error(`${field}.body.bytes`, 'expected base64');
    if (s !== undefined) body = Buffer.from(s, 'base64');
  }
  if (body && body.length > MAX_DIRECT_BODY) return c.error(`${field}.body`, `larger than ${MAX_DIRECT_BODY} bytes`);
  return { status, ...(body ? { body } : {}) };
}

function parseMirrors(c: Checker, r: Record<string, unknown>, field: string, ns: string, o: MeshOptions): MirrorPolicy[] {
  const out: MirrorPolicy[] = [];
  const one = (d: unknown, pct: unknown, f: string, pf: string) => {
    const dest = c.obj(d, f);
    if (!dest) return;
    c.known(dest, f, ['host', 'subset', 'port']);
    const host = c.str(dest.host, `${f}.host`, true);
    const subset = c.str(dest.subset, `${f}.subset`);
    const portObj = c.obj(dest.port, `${f}.port`);
    const port = portObj ? c.int(portObj.number, `${f}.port.number`, 1, 65535) : undefined;
    if (host) out.push({ host: qualifyHost(host, ns, o), port, subset, percent: pct === undefined ? 100 : percent(c, pct, pf) });
  };
  if (r.mirror !== undefined && r.mirrors !== undefined) {
    c.error(`${field}.mirrors`, 'mirror and mirrors cannot both be set');
    return [];
  }
  if (r.mirror !== undefined) one(r.mirror, r.mirrorPercentage, `${field}.mirror`, `${field}.mirrorPercentage`);
  else if (r.mirrorPercentage !== undefined) c.error(`${field}.mirrorPercentage`, 'needs mirror');
  for (const [i, m] of c.list(r.mirrors, `${field}.mirrors`).entries()) {
    const mf = `${field}.mirrors[${i}]`;
    const mo = c.obj(m, mf);
    if (!mo) continue;
    c.known(mo, mf, ['destination', 'percentage']);
    one(mo.destination, mo.percentage, `${mf}.destination`, `${mf}.percentage`);
  }
  return out;
}

function stringMatch(c: Checker, v: unknown, field: string): StringMatch | undefined {
  const m = c.obj(v, field);
  if (!m) return undefined;
  const keys = Object.keys(m).filter((k) => ['exact', 'prefix', 'regex'].includes(k));
  if (keys.length !== 1 || Object.keys(m).length !== 1) return c.error(field, 'expected exactly one of exact, prefix, regex');
  const k = keys[0] as 'exact' | 'prefix' | 'regex';
  const s = c.str(m[k], `${field}.${k}`);
  if (s === undefined) return undefined;
  if (k === 'regex') return c.regex(s, `${field}.regex`) === undefined ? undefined : { regex: s };
  return k === 'exact' ? { exact: s } : { prefix: s };
}

function parseMatch(c: Checker, raw: unknown, field: string): RouteMatch | undefined {
  const m = c.obj(raw, field);
  if (!m) return undefined;
  c.known(m, field, MATCH);
  // Ignoring a match condition would widen the rule; better to refuse the object.
  for (const k of ['sourceLabels', 'gateways', 'sourceNamespace']) {
    if (m[k] !== undefined) return c.error(`${field}.${k}`, 'match condition not supported by weft');
  }
  if (m.ignoreUriCase !== undefined && typeof m.ignoreUriCase !== 'boolean') return c.error(`${field}.ignoreUriCase`, 'expected a boolean');
  const headers: HeaderMatch[] = [];
  // As Istio does: method, authority and scheme are matched as Envoy's pseudo-headers.
  for (const [key, name] of [['method', ':method'], ['authority', ':authority'], ['scheme', ':scheme']] as const) {
    if (m[key] === undefined) continue;
    const sm = stringMatch(c, m[key], `${field}.${key}`);
    if (sm) headers.push({ name, value: sm, invert: false });
  }
  for (const [key, inv] of [['headers', false], ['withoutHeaders', true]] as const) {
    const hs = c.obj(m[key], `${field}.${key}`);
    for (const [name, v] of Object.entries(hs ?? {})) {
      const hf = `${field}.${key}.${name}`;
      if (name !== name.toLowerCase()) c.error(hf, 'header names must be lower case');
      // An empty match object means "present" (Istio semantics).
      if (isObj(v) && Object.keys(v).length === 0) headers.push({ name, invert: inv });
      else {
        const sm = stringMatch(c, v, hf);
        if (sm) headers.push({ name, value: sm, invert: inv });
      }
    }
  }
  const query: QueryMatch[] = [];
  for (const [name, v] of Object.entries(c.obj(m.queryParams, `${field}.queryParams`) ?? {})) {
    const qf = `${field}.queryParams.${name}`;
    if (isObj(v) && Object.keys(v).length === 0) query.push({ name });
    else {
      const sm = stringMatch(c, v, qf);
      if (sm) query.push({ name, value: sm });
    }
  }
  const path = m.uri === undefined ? undefined : stringMatch(c, m.uri, `${field}.uri`);
  const port = c.int(m.port, `${field}.port`, 1, 65535);
  const out: RouteMatch = { path, headers, port };
  if (query.length) out.query = query;
  if (m.ignoreUriCase === true) out.ignoreCase = true;
  return out;
}

function parseRetries(c: Checker, v: unknown, field: string): RetryPolicy | undefined {
  const r = c.obj(v, field);
  if (!r) return undefined;
  c.known(r, field, ['attempts', 'perTryTimeout', 'retryOn', 'retryRemoteLocalities', 'retryIgnorePreviousHosts', 'backoff']);
  // Istio reads an absent `attempts` as 0: the stanza then turns retries off.
  const attempts = c.int(r.attempts, `${field}.attempts`, 0, 1000) ?? 0;
  const retryOn = retryConditions(c, r.retryOn, `${field}.retryOn`);
  if (r.retryRemoteLocalities !== undefined) c.ignored(`${field}.retryRemoteLocalities`, 'weft has no localities: ignored');
  let previousHosts: boolean | undefined;
  if (r.retryIgnorePreviousHosts !== undefined) {
    if (typeof r.retryIgnorePreviousHosts !== 'boolean') c.error(`${field}.retryIgnorePreviousHosts`, 'expected true or false');
    else previousHosts = r.retryIgnorePreviousHosts;
  }
  const backoffMs = c.duration(r.backoff, `${field}.backoff`);
  if (backoffMs === 0) c.error(`${field}.backoff`, 'must be more than 0');
  return { attempts, perTryTimeoutMs: c.duration(r.perTryTimeout, `${field}.perTryTimeout`), retryOn, backoffMs, previousHosts };
}

/** Istio's retryOn: Envoy retry conditions and HTTP status codes; the ones weft's waypoint cannot act on are refused. */
export function retryConditions(c: Checker, v: unknown, field: string): string | undefined {
  const s = c.str(v, field);
  if (s === undefined) return undefined;
  const parts = s.split(',').map((p) => p.trim());
  for (const p of parts) {
    if (/^\d+$/.test(p)) {
      if (Number(p) < 100 || Number(p) > 599) c.error(field, `${p} is not an HTTP status code`);
    } else if (UNSERVED_RETRY_CONDITIONS.includes(p)) c.error(field, `retry condition ${p} is not supported by weft`);
    else if (!RETRY_CONDITIONS.includes(p)) c.error(field, `unknown retry condition ${JSON.stringify(p)} (expected ${RETRY_CONDITIONS.join(', ')} or an HTTP status code)`);
  }
  return parts.join(',');
}

function percent(c: Checker, v: unknown, field: string): number {
  const p = c.obj(v, field);
  if (!p) return 100;
  return c.num(p.value, `${field}.value`, 0, 100) ?? 100;
}

function parseFault(c: Checker, v: unknown, field: string): FaultPolicy | undefined {
  const f = c.obj(v, field);
  if (!f) return undefined;
  c.known(f, field, ['delay', 'abort']);
  const fault: FaultPolicy = {};
  const d = c.obj(f.delay, `${field}.delay`);
  if (d) {
    if (d.exponentialDelay !== undefined) c.error(`${field}.delay.exponentialDelay`, 'not supported (as in Istio)');
    const ms = c.duration(d.fixedDelay, `${field}.delay.fixedDelay`);
    if (ms === undefined && d.fixedDelay === undefined) c.error(`${field}.delay.fixedDelay`, 'required');
    // `percent` (integer) is the deprecated spelling of `percentage.value`.
    const pct = d.percentage !== undefined ? percent(c, d.percentage, `${field}.delay.percentage`) : c.int(d.percent, `${field}.delay.percent`, 0, 100) ?? 100;
    if (ms !== undefined) fault.delay = { ms, percent: pct };
  }
  const a = c.obj(f.abort, `${field}.abort`);
  if (a) {
    const pct = percent(c, a.percentage, `${field}.abort.percentage`);
    if (a.httpStatus !== undefined) {
      const code = c.int(a.httpStatus, `${field}.abort.httpStatus`, 200, 599);
      if (code !== undefined) fault.abort = { percent: pct, httpStatus: code };
    } else if (a.grpcStatus !== undefined) {
      const code = typeof a.grpcStatus === 'string' ? GRPC_STATUS[a.grpcStatus] : undefined;
      if (code === undefined) c.error(`${field}.abort.grpcStatus`, `expected a gRPC status name (${Object.keys(GRPC_STATUS).join(', ')})`);
      else fault.abort = { percent: pct, grpcStatus: code };
    } else c.error(`${field}.abort`, 'httpStatus or grpcStatus is required');
  }
  return fault.delay || fault.abort ? fault : undefined;
}
