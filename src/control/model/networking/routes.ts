// The routing model both VirtualService and the Gateway API routes (HTTPRoute, GRPCRoute) become:
// per destination host, ordered rules of matches and weighted destinations with their policies.
// The traffic model resolves it per service port (port-routes.ts); nothing after this reads the
// source objects.

/** `segments`: the prefix matches whole path segments (Gateway API PathPrefix: "/a" matches "/a" and "/a/b", not "/ab"). */
export type StringMatch = { exact: string } | { prefix: string; segments?: boolean } | { regex: string };

export interface HeaderMatch {
  name: string;
  /** Absent: the header must be present with any value. */
  value?: StringMatch;
  invert: boolean;
}

/** A query parameter; absent value: it must be present. */
export interface QueryMatch {
  name: string;
  value?: StringMatch;
}

export interface RouteMatch {
  path?: StringMatch;
  /** The path matched case-insensitively (VirtualService `ignoreUriCase`). */
  ignoreCase?: boolean;
  /** Method, authority and scheme are matched as Envoy does, as the `:method`, `:authority`, `:scheme` headers. */
  headers: HeaderMatch[];
  query?: QueryMatch[];
  /** Only for this service port (VirtualService `match.port`). */
  port?: number;
}

export interface RouteDestination {
  /** Fully qualified host of a Service or ServiceEntry. */
  host: string;
  port?: number;
  subset?: string;
  weight: number;
  /** Header changes for requests sent to this destination only. */
  headers?: HeaderPolicy;
}

/** Header changes in Envoy's order: remove, then set (overwrite), then add (append). */
export interface HeaderOps {
  set: { name: string; value: string }[];
  add: { name: string; value: string }[];
  remove: string[];
}

export interface HeaderPolicy {
  request?: HeaderOps;
  response?: HeaderOps;
}

/** Answer with a redirect instead of forwarding; unset parts keep the request's. */
export interface RedirectPolicy {
  scheme?: string;
  host?: string;
  port?: number;
  /** The whole path. */
  path?: string;
  /** Replaces the matched path prefix. */
  prefix?: string;
  /** Replaces what the pattern matches in the path. */
  regex?: { pattern: string; substitution: string };
  /** 301, 302, 303, 307 or 308. */
  code: number;
}

/** Answer locally with this status and body. */
export interface DirectResponsePolicy {
  status: number;
  body?: Uint8Array;
}

/** The request as forwarded: at most one path rewrite, and the authority. */
export interface RewritePolicy {
  /** Replaces the matched path prefix. */
  prefix?: string;
  /** Replaces what the pattern matches in the path (RE2 substitution: \1 names a group). */
  regex?: { pattern: string; substitution: string };
  host?: string;
}

/** A copy of each request (a share of them) sent to another destination, its answer dropped. */
export interface MirrorPolicy {
  host: string;
  port?: number;
  subset?: string;
  /** 0..100 */
  percent: number;
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
  /** With either of these the rule answers locally and `destinations` may be empty. */
  redirect?: RedirectPolicy;
  directResponse?: DirectResponsePolicy;
  rewrite?: RewritePolicy;
  headers?: HeaderPolicy;
  mirrors?: MirrorPolicy[];
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
