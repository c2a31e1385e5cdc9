// A Cluster's traffic policy (load balancer, circuit breakers, outlier detection) and a route's
// hash_policy, decoded into the routing table's terms with Envoy's defaults filled in. What the
// waypoint cannot act on as Envoy would is refused, naming the field.
import type { CircuitThresholds, HashPolicy, LbPolicy, OutlierConfig } from '../router/table.ts';
import { decodeEnvoy, type Msg } from './envoy.ts';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
/** A wrapper (UInt32Value, Percent...): absent -> the default; present but 0 decodes as {} (defaults are left out). */
const wrapped = (v: unknown, dflt: number): number => {
  const o = obj(v);
  if (!o) return dflt;
  return typeof o.value === 'number' ? o.value : 0;
};
const ms = (d: unknown, dflt: number): number => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : dflt;
};

/** Envoy's limits: ring sizes up to 8M entries, a Maglev table a prime up to 5000011. */
export const MAX_RING_SIZE = 8_388_608;
export const MAX_MAGLEV_TABLE = 5_000_011;
const DEFAULT_MAGLEV_TABLE = 65_537;

const isPrime = (n: number) => {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
};

const LEAST_REQUEST = 'envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest';
const TYPED: Record<string, (value: Uint8Array, field: string) => LbPolicy> = {
  'envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin': () => ({ kind: 'ROUND_ROBIN' }),
  'envoy.extensions.load_balancing_policies.random.v3.Random': () => ({ kind: 'RANDOM' }),
  [LEAST_REQUEST]: (value, field) => leastRequest(wrapped(decodeEnvoy(LEAST_REQUEST, value).choiceCount, 2), field),
};

function leastRequest(choiceCount: number, field: string): LbPolicy {
  if (!Number.isInteger(choiceCount) || choiceCount < 2 || choiceCount > 100) throw new Error(`${field}.choice_count: ${choiceCount} is not in [2, 100]`);
  return { kind: 'LEAST_REQUEST', choiceCount };
}

/** lb_policy (with its config) or load_balancing_policy, whose first entry is taken as Envoy does. */
export function compileLbPolicy(m: Msg, name: string): LbPolicy {
  const f = `Cluster ${name}`;
  const typed = obj(m.loadBalancingPolicy);
  if (typed) {
    const first = obj(arr(typed.policies)[0]?.typedExtensionConfig);
    const any = obj(first?.typedConfig);
    const typeUrl = str(any?.typeUrl) ?? str(any?.type_url) ?? '';
    const type = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
    const make = TYPED[type];
    if (!make) throw new Error(`${f}.load_balancing_policy.policies[0]: ${type || 'empty'} is not supported by the waypoint (round_robin, least_request, random; consistent hashing by lb_policy)`);
    return make((any?.value as Uint8Array | undefined) ?? new Uint8Array(), `${f}.load_balancing_policy.policies[0]`);
  }
  const policy = str(m.lbPolicy) ?? 'ROUND_ROBIN';
  switch (policy) {
    case 'ROUND_ROBIN':
      return { kind: 'ROUND_ROBIN' };
    case 'RANDOM':
      return { kind: 'RANDOM' };
    case 'LEAST_REQUEST':
      return leastRequest(wrapped(obj(m.leastRequestLbConfig)?.choiceCount, 2), `${f}.least_request_lb_config`);
    case 'RING_HASH': {
      const c = obj(m.ringHashLbConfig) ?? {};
      const min = wrapped(c.minimumRingSize, 1024);
      const max = wrapped(c.maximumRingSize, MAX_RING_SIZE);
      if (c.hashFunction !== undefined && c.hashFunction !== 'XX_HASH') throw new Error(`${f}.ring_hash_lb_config.hash_function: ${String(c.hashFunction)} is not supported`);
      if (!Number.isSafeInteger(max) || max < 1 || max > MAX_RING_SIZE) throw new Error(`${f}.ring_hash_lb_config.maximum_ring_size: ${max} is not in [1, ${MAX_RING_SIZE}]`);
      if (!Number.isSafeInteger(min) || min < 1 || min > max) throw new Error(`${f}.ring_hash_lb_config.minimum_ring_size: ${min} is not in [1, ${max}]`);
      return { kind: 'RING_HASH', minimumRingSize: min, maximumRingSize: max };
    }
    case 'MAGLEV': {
      const size = wrapped(obj(m.maglevLbConfig)?.tableSize, DEFAULT_MAGLEV_TABLE);
      if (!Number.isSafeInteger(size) || size > MAX_MAGLEV_TABLE || !isPrime(size)) throw new Error(`${f}.maglev_lb_config.table_size: ${size} is not a prime of at most ${MAX_MAGLEV_TABLE}`);
      return { kind: 'MAGLEV', tableSize: size };
    }
    default:
      throw new Error(`${f}.lb_policy: ${policy} is not supported by the waypoint`);
  }
}

/** The DEFAULT priority's thresholds (routes are DEFAULT priority), Envoy's defaults for what is unset. */
export function compileCircuit(m: Msg, name: string): CircuitThresholds | undefined {
  const cb = obj(m.circuitBreakers);
  if (!cb) return undefined;
  const t = arr(cb.thresholds).find((x) => (str(x.priority) ?? 'DEFAULT') === 'DEFAULT') ?? {};
  const out = {
    maxConnections: wrapped(t.maxConnections, 1024),
    maxPendingRequests: wrapped(t.maxPendingRequests, 1024),
    maxRequests: wrapped(t.maxRequests, 1024),
    maxRetries: wrapped(t.maxRetries, 3),
  };
  if (obj(cb.perHostThresholds) ?? arr(cb.perHostThresholds)[0]) throw new Error(`Cluster ${name}.circuit_breakers.per_host_thresholds: not supported by the waypoint`);
  return out;
}

/**
 * outlier_detection with Envoy's defaults. Success-rate ejection (on by default in Envoy) is not
 * implemented: it must be turned off (enforcing_success_rate 0, as Istio writes), and so must the
 * local-origin split. Failure-percentage ejection is honoured only when neither consecutive
 * detector is given: the control plane adds it next to them for proxyless gRPC (which has no
 * consecutive detectors), and Istio's own waypoint, which never gets it, ejects on consecutive
 * errors alone.
 */
export function compileOutlier(m: Msg, name: string): OutlierConfig | undefined {
  const od = obj(m.outlierDetection);
  if (!od) return undefined;
  const f = `Cluster ${name}.outlier_detection`;
  if (wrapped(od.enforcingSuccessRate, 100) !== 0) throw new Error(`${f}.enforcing_success_rate: success-rate ejection is not supported by the waypoint (set it to 0)`);
  if (od.splitExternalLocalOriginErrors === true) throw new Error(`${f}.split_external_local_origin_errors: not supported by the waypoint`);
  const pct = (v: unknown, field: string, dflt: number) => {
    const n = wrapped(v, dflt);
    if (!(n >= 0 && n <= 100)) throw new Error(`${f}.${field}: ${n} is not a percentage`);
    return n;
  };
  const consecutiveGiven = (od.consecutive_5xx ?? od.consecutive5xx ?? od.consecutiveGatewayFailure) !== undefined;
  const base = ms(od.baseEjectionTime, 30_000);
  const interval = ms(od.interval, 10_000);
  if (interval <= 0) throw new Error(`${f}.interval: must be greater than 0`);
  return {
    intervalMs: interval,
    baseEjectionTimeMs: base,
    maxEjectionTimeMs: ms(od.maxEjectionTime, Math.max(300_000, base)),
    maxEjectionPercent: pct(od.maxEjectionPercent, 'max_ejection_percent', 10),
    alwaysEjectOneHost: obj(od.alwaysEjectOneHost)?.value === true,
    consecutive5xx: wrapped(od.consecutive_5xx ?? od.consecutive5xx, 5),
    enforcingConsecutive5xx: pct(od.enforcingConsecutive_5xx ?? od.enforcingConsecutive5xx, 'enforcing_consecutive_5xx', 100),
    consecutiveGatewayFailure: wrapped(od.consecutiveGatewayFailure, 5),
    enforcingConsecutiveGatewayFailure: pct(od.enforcingConsecutiveGatewayFailure, 'enforcing_consecutive_gateway_failure', 0),
    failurePercentageThreshold: pct(od.failurePercentageThreshold, 'failure_percentage_threshold', 85),
    enforcingFailurePercentage: consecutiveGiven ? 0 : pct(od.enforcingFailurePercentage, 'enforcing_failure_percentage', 0),
    failurePercentageMinimumHosts: wrapped(od.failurePercentageMinimumHosts, 5),
    failurePercentageRequestVolume: wrapped(od.failurePercentageRequestVolume, 50),
  };
}

/** common_lb_config.healthy_panic_threshold: Envoy's 50% unless given. */
export function compilePanicThreshold(m: Msg, name: string): number {
  const t = wrapped(obj(m.commonLbConfig)?.healthyPanicThreshold, 50);
  if (!(t >= 0 && t <= 100)) throw new Error(`Cluster ${name}.common_lb_config.healthy_panic_threshold: ${t} is not a percentage`);
  return t;
}

/** A route's hash_policy list. */
export function compileHashPolicies(v: unknown, field: string): HashPolicy[] | undefined {
  const list = arr(v);
  if (!list.length) return undefined;
  return list.map((h, i) => {
    const f = `${field}.hash_policy[${i}]`;
    const terminal = h.terminal === true;
    const header = obj(h.header);
    if (header) {
      const name = str(header.headerName)?.toLowerCase();
      if (!name) throw new Error(`${f}.header.header_name: empty`);
      if (header.regexRewrite !== undefined) throw new Error(`${f}.header.regex_rewrite: not supported by the waypoint`);
      return { terminal, header: name };
    }
    const cookie = obj(h.cookie);
    if (cookie) {
      const name = str(cookie.name);
      if (!name || !/^[!#-'*+\-.0-9A-Z^-z|~]+$/.test(name)) throw new Error(`${f}.cookie.name: ${JSON.stringify(name ?? '')} is not a cookie name`);
      const path = str(cookie.path) || undefined;
      if (path !== undefined && !/^[\x21-\x3a\x3c-\x7e]+$/.test(path)) throw new Error(`${f}.cookie.path: not a cookie path`);
      if (arr(cookie.attributes).length) throw new Error(`${f}.cookie.attributes: not supported by the waypoint`);
      const ttlMs = cookie.ttl === undefined ? undefined : ms(cookie.ttl, 0);
      return { terminal, cookie: { name, ...(path ? { path } : {}), ...(ttlMs !== undefined ? { ttlMs } : {}) } };
    }
    if (obj(h.connectionProperties)) {
      if (obj(h.connectionProperties)!.sourceIp !== true) throw new Error(`${f}.connection_properties.source_ip: must be true`);
      return { terminal, sourceIp: true as const };
    }
    const query = obj(h.queryParameter);
    if (query) {
      const name = str(query.name);
      if (!name) throw new Error(`${f}.query_parameter.name: empty`);
      return { terminal, query: name };
    }
    throw new Error(`${f}: no policy specifier the waypoint supports (header, cookie, connection_properties, query_parameter)`);
  });
}
