// networking.istio.io DestinationRule -> per-host cluster policy: subsets (label selections of the
// host's endpoints, each its own cluster) and the traffic policy weft translates (outlier
// detection, connection pool limits, simple or consistent-hash load balancer, each also per port).
// TLS settings belong to HBONE, not here. policyFor() merges them for one cluster as Istio does.
import type { KObject } from '../../../kube/objects.ts';
import { Checker, DNS1123_LABEL, qualifyHost, type NetworkingProblem } from './common.ts';
import { orderKey } from './routes.ts';
import type { MeshOptions } from './workloads.ts';

export interface OutlierPolicy {
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  minHealthPercent?: number;
}

export interface ConnectionPoolPolicy {
  maxConnections?: number;
  connectTimeoutMs?: number;
  maxRequests?: number;
  maxPendingRequests?: number;
  maxRetries?: number;
}

/** What a consistent-hash load balancer hashes: exactly one key, as Istio's hash_key oneof. */
export type HashKey =
  | { header: string }
  | { cookie: { name: string; path?: string; ttlMs?: number } }
  | { sourceIp: true }
  | { query: string };

export interface ConsistentHash {
  key: HashKey;
  /** RING_HASH (the default, with its minimum ring size) or MAGLEV (with its prime table size). */
  algorithm: { ring: { minimumRingSize?: number } } | { maglev: { tableSize?: number } };
}

/** The fields a port-level setting replaces (all of them, as Istio does: they do not inherit). */
export interface PortPolicy {
  outlier?: OutlierPolicy;
  pool?: ConnectionPoolPolicy;
  lb?: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';
  /** Set instead of `lb` for loadBalancer.consistentHash (one loadBalancer, merged as a unit). */
  hash?: ConsistentHash;
}

export interface TrafficPolicy extends PortPolicy {
  /** portLevelSettings by service port number. */
  ports?: Record<number, PortPolicy>;
}

export interface DestinationPolicy {
  source: string;
  host: string;
  order: string;
  policy: TrafficPolicy;
  /** `policy`: merged over the rule's top level without port settings; `own`: as written, for policyFor(). */
  subsets: { name: string; labels: Record<string, string>; policy: TrafficPolicy; own: TrafficPolicy }[];
}

/** Envoy's limits: minimum_ring_size at most 8M; a Maglev table a prime of at most 5000011. */
export const MAX_RING_SIZE = 8_388_608;
export const MAX_MAGLEV_TABLE = 5_000_011;

const isPrime = (n: number) => {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
};

const lbOf = (p: PortPolicy): Pick<PortPolicy, 'lb' | 'hash'> => (p.hash ? { hash: p.hash } : p.lb ? { lb: p.lb } : {});
const fields = (p: PortPolicy): TrafficPolicy => clean({ outlier: p.outlier, pool: p.pool, ...lbOf(p) });
/** Without the keys whose value is undefined. */
const clean = <T extends object>(p: T): T => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as T;

/**
 * The policy of one cluster (service port, optional subset), merged as Istio's MergeTrafficPolicy:
 * the top level's port setting for the port replaces its four fields; a subset's fields replace
 * those field by field (the load balancer as one field); a subset's port setting replaces all four.
 */
export function policyFor(dr: DestinationPolicy | undefined, port: number, subset?: string): TrafficPolicy {
  if (!dr) return {};
  const top = fields(dr.policy.ports?.[port] ?? dr.policy);
  if (!subset) return top;
  const s = dr.subsets.find((x) => x.name === subset);
  if (!s) return top;
  const own = s.own;
  const atPort = own.ports?.[port];
  if (atPort) return fields(atPort);
  return clean({ outlier: own.outlier ?? top.outlier, pool: own.pool ?? top.pool, ...(own.lb || own.hash ? lbOf(own) : lbOf(top)) });
}

const LB = ['ROUND_ROBIN', 'LEAST_REQUEST', 'LEAST_CONN', 'RANDOM', 'UNSPECIFIED'];

export function parseDestinationRule(obj: KObject, o: MeshOptions): { rule?: DestinationPolicy; problems: NetworkingProblem[] } {
  const c = new Checker(obj);
  const ns = obj.metadata.namespace ?? 'default';
  const spec = c.obj(obj.spec, 'spec') ?? {};
  c.known(spec, 'spec', ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector']);
  if (spec.workloadSelector !== undefined) c.ignored('spec.workloadSelector');
  const host = c.str(spec.host, 'spec.host', true);
  if (host?.includes('*')) c.error('spec.host', 'wildcard hosts are not supported by weft');
  const policy = trafficPolicy(c, spec.trafficPolicy, 'spec.trafficPolicy');
  const subsets: DestinationPolicy['subsets'] = [];
  const seen = new Set<string>();
  for (const [i, raw] of c.list(spec.subsets, 'spec.subsets').entries()) {
    const f = `spec.subsets[${i}]`;
    const s = c.obj(raw, f);
    if (!s) continue;
    c.known(s, f, ['name', 'labels', 'trafficPolicy']);
    const name = c.str(s.name, `${f}.name`, true);
    if (name && !DNS1123_LABEL.test(name)) c.error(`${f}.name`, 'must be a DNS-1123 label (it is part of a cluster name)');
    if (name && seen.has(name)) c.error(`${f}.name`, `duplicate subset ${name}`);
    if (name) seen.add(name);
    const labels = c.labels(s.labels, `${f}.labels`) ?? {};
    // Subset policy overrides the top-level one field by field, as Istio merges them.
    const own = trafficPolicy(c, s.trafficPolicy, `${f}.trafficPolicy`);
    if (name) subsets.push({ name, labels, own, policy: clean({ outlier: own.outlier ?? policy.outlier, pool: own.pool ?? policy.pool, ...(own.lb || own.hash ? lbOf(own) : lbOf(policy)) }) });
  }
  if (c.fatal || !host) return { problems: c.problems };
  return { rule: { source: `DestinationRule/${ns}/${obj.metadata.name}`, host: qualifyHost(host, ns, o), order: orderKey(obj), policy, subsets }, problems: c.problems };
}

function trafficPolicy(c: Checker, v: unknown, field: string): TrafficPolicy {
  const tp = c.obj(v, field);
  if (!tp) return {};
  c.known(tp, field, ['connectionPool', 'outlierDetection', 'loadBalancer', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol']);
  const out: TrafficPolicy = portPolicy(c, tp, field);
  const ports: Record<number, PortPolicy> = {};
  for (const [i, raw] of c.list(tp.portLevelSettings, `${field}.portLevelSettings`).entries()) {
    const f = `${field}.portLevelSettings[${i}]`;
    const pl = c.obj(raw, f);
    if (!pl) continue;
    c.known(pl, f, ['port', 'connectionPool', 'outlierDetection', 'loadBalancer', 'tls']);
    const port = c.int(c.obj(pl.port, `${f}.port`)?.number, `${f}.port.number`, 1, 65535);
    if (port === undefined) c.error(`${f}.port.number`, 'required');
    else if (ports[port]) c.error(`${f}.port.number`, `duplicate port ${port}`);
    else ports[port] = portPolicy(c, pl, f);
  }
  if (Object.keys(ports).length) out.ports = ports;
  return out;
}

/** The fields a traffic policy and a port-level setting share. */
function portPolicy(c: Checker, tp: Record<string, unknown>, field: string): PortPolicy {
  if (tp.tls !== undefined) c.ignored(`${field}.tls`, 'mesh traffic is secured by HBONE: ignored');
  const out: PortPolicy = {};
  const od = c.obj(tp.outlierDetection, `${field}.outlierDetection`);
  if (od) {
    const f = `${field}.outlierDetection`;
    c.known(od, f, ['consecutive5xxErrors', 'consecutiveGatewayErrors', 'consecutiveErrors', 'interval', 'baseEjectionTime', 'maxEjectionPercent', 'minHealthPercent', 'splitExternalLocalOriginErrors', 'consecutiveLocalOriginFailures']);
    out.outlier = {
      consecutive5xxErrors: c.int(od.consecutive5xxErrors ?? od.consecutiveErrors, `${f}.consecutive5xxErrors`, 0),
      consecutiveGatewayErrors: c.int(od.consecutiveGatewayErrors, `${f}.consecutiveGatewayErrors`, 0),
      intervalMs: c.duration(od.interval, `${f}.interval`),
      baseEjectionTimeMs: c.duration(od.baseEjectionTime, `${f}.baseEjectionTime`),
      maxEjectionPercent: c.int(od.maxEjectionPercent, `${f}.maxEjectionPercent`, 0, 100),
      minHealthPercent: c.int(od.minHealthPercent, `${f}.minHealthPercent`, 0, 100),
    };
    if (out.outlier.intervalMs === 0) c.error(`${f}.interval`, 'must be greater than 0');
  }
  const cp = c.obj(tp.connectionPool, `${field}.connectionPool`);
  if (cp) {
    const f = `${field}.connectionPool`;
    c.known(cp, f, ['tcp', 'http']);
    const tcp = c.obj(cp.tcp, `${f}.tcp`) ?? {};
    const http = c.obj(cp.http, `${f}.http`) ?? {};
    c.known(tcp, `${f}.tcp`, ['maxConnections', 'connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout']);
    c.known(http, `${f}.http`, ['http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams']);
    out.pool = {
      maxConnections: c.int(tcp.maxConnections, `${f}.tcp.maxConnections`, 1),
      connectTimeoutMs: c.duration(tcp.connectTimeout, `${f}.tcp.connectTimeout`),
      maxRequests: c.int(http.http2MaxRequests, `${f}.http.http2MaxRequests`, 1),
      maxPendingRequests: c.int(http.http1MaxPendingRequests, `${f}.http.http1MaxPendingRequests`, 1),
      maxRetries: c.int(http.maxRetries, `${f}.http.maxRetries`, 0),
    };
  }
  const lb = c.obj(tp.loadBalancer, `${field}.loadBalancer`);
  if (lb) {
    const f = `${field}.loadBalancer`;
    c.known(lb, f, ['simple', 'consistentHash']);
    if (lb.simple !== undefined && lb.consistentHash !== undefined) c.error(f, 'simple and consistentHash are exclusive');
    if (lb.simple !== undefined && (typeof lb.simple !== 'string' || !LB.includes(lb.simple))) c.error(`${f}.simple`, `expected one of ${LB.join(', ')}`);
    else if (lb.simple === 'LEAST_REQUEST' || lb.simple === 'LEAST_CONN') out.lb = 'LEAST_REQUEST';
    else if (lb.simple === 'RANDOM') out.lb = 'RANDOM';
    else if (lb.simple === 'ROUND_ROBIN') out.lb = 'ROUND_ROBIN';
    const hash = consistentHash(c, lb.consistentHash, `${f}.consistentHash`);
    if (hash) out.hash = hash;
  }
  return out;
}

function consistentHash(c: Checker, v: unknown, f: string): ConsistentHash | undefined {
  const ch = c.obj(v, f);
  if (!ch) return undefined;
  c.known(ch, f, ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName', 'ringHash', 'maglev', 'minimumRingSize']);
  const keys: HashKey[] = [];
  const header = c.str(ch.httpHeaderName, `${f}.httpHeaderName`);
  if (header !== undefined) keys.push({ header: header.toLowerCase() });
  const cookie = c.obj(ch.httpCookie, `${f}.httpCookie`);
  if (cookie) {
    c.known(cookie, `${f}.httpCookie`, ['name', 'path', 'ttl', 'attributes']);
    const name = c.str(cookie.name, `${f}.httpCookie.name`, true);
    const path = c.str(cookie.path, `${f}.httpCookie.path`);
    const ttlMs = c.duration(cookie.ttl, `${f}.httpCookie.ttl`);
    if (name !== undefined) keys.push({ cookie: clean({ name, path, ttlMs }) });
  }
  if (ch.useSourceIp !== undefined && typeof ch.useSourceIp !== 'boolean') c.error(`${f}.useSourceIp`, 'expected a boolean');
  else if (ch.useSourceIp === true) keys.push({ sourceIp: true });
  const query = c.str(ch.httpQueryParameterName, `${f}.httpQueryParameterName`);
  if (query !== undefined) keys.push({ query });
  if (keys.length !== 1) return c.error(f, 'expected exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName');
  const ring = c.obj(ch.ringHash, `${f}.ringHash`);
  const maglev = c.obj(ch.maglev, `${f}.maglev`);
  if (ring && maglev) return c.error(f, 'ringHash and maglev are exclusive');
  if (maglev) {
    c.known(maglev, `${f}.maglev`, ['tableSize']);
    const tableSize = c.int(maglev.tableSize, `${f}.maglev.tableSize`, 2, MAX_MAGLEV_TABLE);
    if (tableSize !== undefined && !isPrime(tableSize)) return c.error(`${f}.maglev.tableSize`, `${tableSize} is not a prime number`);
    return { key: keys[0]!, algorithm: { maglev: clean({ tableSize }) } };
  }
  if (ring) c.known(ring, `${f}.ringHash`, ['minimumRingSize']);
  const minimumRingSize = c.int(ring?.minimumRingSize ?? ch.minimumRingSize, ring ? `${f}.ringHash.minimumRingSize` : `${f}.minimumRingSize`, 1, MAX_RING_SIZE);
  return { key: keys[0]!, algorithm: { ring: clean({ minimumRingSize }) } };
}
