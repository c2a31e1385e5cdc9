// networking.istio.io DestinationRule -> per-host cluster policy: subsets (label selections of the
// host's endpoints, each its own cluster) and the traffic policy weft translates (outlier
// detection, connection pool limits, simple load balancer). TLS settings belong to HBONE, not here.
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

export interface TrafficPolicy {
  outlier?: OutlierPolicy;
  pool?: ConnectionPoolPolicy;
  lb?: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';
}

export interface DestinationPolicy {
  source: string;
  host: string;
  order: string;
  policy: TrafficPolicy;
  subsets: { name: string; labels: Record<string, string>; policy: TrafficPolicy }[];
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
    if (name) subsets.push({ name, labels, policy: { outlier: own.outlier ?? policy.outlier, pool: own.pool ?? policy.pool, lb: own.lb ?? policy.lb } });
  }
  if (c.fatal || !host) return { problems: c.problems };
  return { rule: { source: `DestinationRule/${ns}/${obj.metadata.name}`, host: qualifyHost(host, ns, o), order: orderKey(obj), policy, subsets }, problems: c.problems };
}

function trafficPolicy(c: Checker, v: unknown, field: string): TrafficPolicy {
  const tp = c.obj(v, field);
  if (!tp) return {};
  c.known(tp, field, ['connectionPool', 'outlierDetection', 'loadBalancer', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol']);
  if (tp.portLevelSettings !== undefined) c.ignored(`${field}.portLevelSettings`);
  if (tp.tls !== undefined) c.ignored(`${field}.tls`, 'mesh traffic is secured by HBONE: ignored');
  const out: TrafficPolicy = {};
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
    c.known(lb, f, ['simple']);
    if (lb.simple !== undefined && (typeof lb.simple !== 'string' || !LB.includes(lb.simple))) c.error(`${f}.simple`, `expected one of ${LB.join(', ')}`);
    else if (lb.simple === 'LEAST_REQUEST' || lb.simple === 'LEAST_CONN') out.lb = 'LEAST_REQUEST';
    else if (lb.simple === 'RANDOM') out.lb = 'RANDOM';
    else if (lb.simple === 'ROUND_ROBIN') out.lb = 'ROUND_ROBIN';
  }
  return out;
}
