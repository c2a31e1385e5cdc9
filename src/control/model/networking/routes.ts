// The routing model both VirtualService and the Gateway API routes (HTTPRoute, GRPCRoute) become:
// per destination host, ordered rules of matches and weighted destinations with their policies.
// The traffic model resolves it per service port (port-routes.ts); nothing after this reads the
// source objects.

export type StringMatch = { exact: string } | { prefix: string } | { regex: string };

export interface HeaderMatch {
  name: string;
  /** Absent: the header must be present with any value. */
  value?: StringMatch;
  invert: boolean;
}

export interface RouteMatch {
  path?: StringMatch;
  headers: HeaderMatch[];
  /** Only for this service port (VirtualService `match.port`). */
  port?: number;
}

export interface RouteDestination {
  /** Fully qualified host of a Service or ServiceEntry. */
  host: string;
  port?: number;
  subset?: string;
  weight: number;
}

export interface FaultPolicy {
  delay?: { ms: number; percent: number };
  abort?: { percent: number; grpcStatus?: number; httpStatus?: number };
}

export interface RetryPolicy {
  /** 0 disables retries; absent keeps the mesh default. */
  attempts?: number;
  perTryTimeoutMs?: number;
  /** Istio's spelling: Envoy retry conditions and HTTP status codes, comma-separated. */
  retryOn?: string;
  /** The base of the exponential backoff between attempts (Envoy's default 25 ms when absent). */
  backoffMs?: number;
  /** Prefer endpoints not tried yet (Istio's `retryIgnorePreviousHosts`, on by default). */
  previousHosts?: boolean;
}

/** The retry conditions weft's waypoint acts on (Envoy's names); Istio also accepts HTTP status codes among them. */
export const RETRY_CONDITIONS = [
  '5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
];
/** Valid in Istio, not served by weft: refused rather than silently not retried. */
export const UNSERVED_RETRY_CONDITIONS = ['retriable-headers', 'envoy-ratelimited', 'reset-before-request', 'http3-post-connect-failure'];

export interface RouteRule {
  name: string;
  /** Any of these (OR); empty matches every request. */
  matches: RouteMatch[];
  destinations: RouteDestination[];
  timeoutMs?: number;
  retry?: RetryPolicy;
  fault?: FaultPolicy;
}

/** Rules one object attaches to one host (and, for Gateway API parentRefs, maybe one port). */
export interface RouteTable {
  /** "Kind/namespace/name", for problems and config dumps. */
  source: string;
  host: string;
  port?: number;
  rules: RouteRule[];
  /** Gateway API tables merge by match precedence; VirtualService rules keep their order. */
  api: 'gateway' | 'istio';
  /** Older objects win ties (creationTimestamp, then namespace/name). */
  order: string;
}

/** gRPC status names as VirtualService `fault.abort.grpcStatus` spells them. */
export const GRPC_STATUS: Record<string, number> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
  DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

export const orderKey = (o: { metadata: { name: string; namespace?: string; creationTimestamp?: string } }) =>
  `${o.metadata.creationTimestamp ?? ''}|${o.metadata.namespace ?? ''}/${o.metadata.name}`;
