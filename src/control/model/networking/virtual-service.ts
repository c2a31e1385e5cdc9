// networking.istio.io VirtualService -> route tables for mesh traffic (HTTP routes only: gRPC is
// HTTP/2). A VirtualService bound only to ingress gateways (no "mesh" in `gateways`) does not
// apply to the mesh and yields nothing.
import type { KObject } from '../../../kube/objects.ts';
import { Checker, isObj, qualifyHost, type NetworkingProblem } from './common.ts';
import { GRPC_STATUS, orderKey, RETRY_CONDITIONS, UNSERVED_RETRY_CONDITIONS, type FaultPolicy, type HeaderMatch, type RetryPolicy, type RouteDestination, type RouteMatch, type RouteRule, type RouteTable, type StringMatch } from './routes.ts';
import type { MeshOptions } from './workloads.ts';

const SPEC = ['hosts', 'gateways', 'http', 'tcp', 'tls', 'exportTo'];
const HTTP = ['name', 'match', 'route', 'timeout', 'retries', 'fault', 'headers', 'mirror', 'mirrorPercentage', 'mirrors', 'corsPolicy', 'rewrite', 'redirect', 'directResponse', 'delegate'];
const MATCH = ['name', 'uri', 'headers', 'withoutHeaders', 'port', 'method', 'authority', 'scheme', 'queryParams', 'ignoreUriCase', 'sourceLabels', 'gateways', 'sourceNamespace', 'statPrefix'];
const UNSUPPORTED_ACTIONS = ['redirect', 'directResponse', 'delegate'];
/** Valid, not applied by weft yet: reported, the rest of the rule still routes. */
const IGNORED = ['headers', 'mirror', 'mirrorPercentage', 'mirrors', 'corsPolicy', 'rewrite'];

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
  if (!dests.length) return c.error(`${field}.route`, 'at least one destination is required');
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
    if (host) destinations.push({ host: qualifyHost(host, ns, o), port, subset, weight: weight ?? (dests.length === 1 ? 100 : 0) });
  }
  if (destinations.length > 1 && destinations.every((d) => d.weight === 0)) c.error(`${field}.route`, 'weights are required when splitting between destinations');
  const rule: RouteRule = { name: typeof r.name === 'string' ? r.name : `${field}`, matches, destinations };
  rule.timeoutMs = c.duration(r.timeout, `${field}.timeout`);
  rule.retry = parseRetries(c, r.retries, `${field}.retries`);
  rule.fault = parseFault(c, r.fault, `${field}.fault`);
  return rule;
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
  for (const k of ['method', 'authority', 'scheme', 'queryParams', 'sourceLabels', 'gateways', 'sourceNamespace']) {
    if (m[k] !== undefined) return c.error(`${field}.${k}`, 'match condition not supported by weft');
  }
  if (m.ignoreUriCase === true) return c.error(`${field}.ignoreUriCase`, 'not supported by weft');
  const headers: HeaderMatch[] = [];
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
  const path = m.uri === undefined ? undefined : stringMatch(c, m.uri, `${field}.uri`);
  const port = c.int(m.port, `${field}.port`, 1, 65535);
  return { path, headers, port };
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
