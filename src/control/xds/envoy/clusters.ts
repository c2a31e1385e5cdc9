// Cluster and ClusterLoadAssignment for one (host, port, subset) of the traffic model, from its
// DestinationRule policy.
import type { ConsistentHash, OutlierPolicy, TrafficPolicy } from '../../model/networking/destination-rule.ts';
import type { MeshEndpoint } from '../../model/networking/services.ts';
import { ADS_SOURCE, any, duration, encode, HTTP_PROTOCOL_OPTIONS } from './messages.ts';

const CONNECT_TIMEOUT_MS = 10_000; // Istio's default
const UNLIMITED = 4_294_967_295;

/**
 * `http2`: the port is declared http2, grpc or grpc-web, so the upstream speaks HTTP/2 with prior
 * knowledge, which Envoy (the waypoint) reads from the cluster's HttpProtocolOptions, as Istio
 * writes them; proxyless gRPC ignores the option (it always speaks HTTP/2).
 */
export function buildCluster(name: string, policy: TrafficPolicy, dns?: { address: string; port: number }, http2 = false): Uint8Array {
  const c: Record<string, unknown> = { name, connectTimeout: duration(policy.pool?.connectTimeoutMs ?? CONNECT_TIMEOUT_MS) };
  if (http2) c.typedExtensionProtocolOptions = { [HTTP_PROTOCOL_OPTIONS]: any(HTTP_PROTOCOL_OPTIONS, { explicitHttpConfig: { http2ProtocolOptions: {} } }) };
  if (dns) {
    c.type = 'LOGICAL_DNS';
    c.loadAssignment = { clusterName: name, endpoints: [locality([{ address: dns.address, port: dns.port, labels: {} }])] };
  } else {
    c.type = 'EDS';
    c.edsClusterConfig = { edsConfig: ADS_SOURCE, serviceName: name };
  }
  Object.assign(c, policy.hash ? consistentHash(policy.hash) : loadBalancing(policy.lb));
  if (policy.outlier) {
    c.outlierDetection = outlierDetection(policy.outlier);
    // Istio turns Envoy's 50% panic threshold off (minHealthPercent, default 0) with outlier
    // detection: with few pods per service, panic would send to the ejected ones.
    c.commonLbConfig = { healthyPanicThreshold: { value: policy.outlier.minHealthPercent ?? 0 } };
  }
  const p = policy.pool;
  if (p && (p.maxConnections ?? p.maxRequests ?? p.maxPendingRequests ?? p.maxRetries) !== undefined) {
    // Istio's thresholds: what the rule leaves unset is unlimited, not Envoy's 1024 (or 3 retries).
    const t: Record<string, unknown> = {
      priority: 'DEFAULT',
      maxConnections: { value: p.maxConnections ?? UNLIMITED },
      maxPendingRequests: { value: p.maxPendingRequests ?? UNLIMITED },
      maxRequests: { value: p.maxRequests ?? UNLIMITED },
      maxRetries: { value: p.maxRetries ?? UNLIMITED },
    };
    c.circuitBreakers = { thresholds: [t] };
  }
  return encode('envoy.config.cluster.v3.Cluster', c);
}

/**
 * ROUND_ROBIN stays the classic enum every client knows. Other policies use the typed list, whose
 * clients take the first entry they implement, so gRPC (no least_request/random) falls back to
 * round_robin while Envoy uses the requested one.
 */
function loadBalancing(lb: TrafficPolicy['lb']): Record<string, unknown> {
  if (!lb || lb === 'ROUND_ROBIN') return { lbPolicy: 'ROUND_ROBIN' };
  const ext = (name: string, type: string) => ({ typedExtensionConfig: { name, typedConfig: any(type) } });
  const first = lb === 'LEAST_REQUEST'
    ? ext('envoy.load_balancing_policies.least_request', 'envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest')
    : ext('envoy.load_balancing_policies.random', 'envoy.extensions.load_balancing_policies.random.v3.Random');
  return { loadBalancingPolicy: { policies: [first, ext('envoy.load_balancing_policies.round_robin', 'envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin')] } };
}

/** Consistent hashing is a cluster policy (the classic enum, which gRPC also reads); the key is the routes' hash_policy. */
function consistentHash(h: ConsistentHash): Record<string, unknown> {
  if ('maglev' in h.algorithm) return { lbPolicy: 'MAGLEV', ...(h.algorithm.maglev.tableSize ? { maglevLbConfig: { tableSize: { value: h.algorithm.maglev.tableSize } } } : {}) };
  const min = h.algorithm.ring.minimumRingSize;
  return { lbPolicy: 'RING_HASH', ...(min ? { ringHashLbConfig: { minimumRingSize: { value: min } } } : {}) };
}

/**
 * Istio's consecutive-error ejection, for Envoy. Proxyless gRPC implements only the statistical
 * detectors (gRFC A50), so the same intent is also expressed as failure-percentage ejection: an
 * endpoint failing more than half of at least N requests in an interval is ejected. Success-rate
 * ejection, on by default in Envoy, is turned off as Istio does.
 */
function outlierDetection(o: OutlierPolicy): Record<string, unknown> {
  const od: Record<string, unknown> = { enforcingSuccessRate: { value: 0 } };
  const consecutive = o.consecutive5xxErrors ?? o.consecutiveGatewayErrors;
  if (o.consecutive5xxErrors !== undefined) {
    od.consecutive_5xx = { value: o.consecutive5xxErrors };
    od.enforcingConsecutive_5xx = { value: o.consecutive5xxErrors > 0 ? 100 : 0 };
  }
  if (o.consecutiveGatewayErrors !== undefined) {
    od.consecutiveGatewayFailure = { value: o.consecutiveGatewayErrors };
    od.enforcingConsecutiveGatewayFailure = { value: o.consecutiveGatewayErrors > 0 ? 100 : 0 };
  }
  if (consecutive) {
    od.enforcingFailurePercentage = { value: 100 };
    od.failurePercentageThreshold = { value: 50 };
    od.failurePercentageRequestVolume = { value: consecutive };
    od.failurePercentageMinimumHosts = { value: 1 };
  }
  if (o.intervalMs !== undefined) od.interval = duration(o.intervalMs);
  if (o.baseEjectionTimeMs !== undefined) od.baseEjectionTime = duration(o.baseEjectionTimeMs);
  if (o.maxEjectionPercent !== undefined) od.maxEjectionPercent = { value: o.maxEjectionPercent };
  return od;
}

function locality(endpoints: MeshEndpoint[]) {
  return {
    locality: {},
    // A zero-weight locality is ignored by clients (gRFC A27), so every locality weighs 1.
    loadBalancingWeight: { value: 1 },
    lbEndpoints: endpoints.map((e) => ({ endpoint: { address: { socketAddress: { address: e.address, portValue: e.port } } }, healthStatus: 'HEALTHY', loadBalancingWeight: { value: 1 } })),
  };
}

export function buildLoadAssignment(name: string, endpoints: MeshEndpoint[]): Uint8Array {
  // In address order, not the order the configuration arrived in: replicas (and a restarted one)
  // see pods arrive in different orders, and the body's hash is the version clients resume from.
  const sorted = [...endpoints].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port));
  return encode('envoy.config.endpoint.v3.ClusterLoadAssignment', { clusterName: name, endpoints: sorted.length ? [locality(sorted)] : [] });
}
