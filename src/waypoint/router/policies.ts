// The resilience parts of a route, as the waypoint acts on them: Envoy's retry_policy (run by
// upstream/retry.ts) and the fault filter's per-route config (filters/fault.ts), compiled from xDS
// by xds/resilience.ts. Plain data, imported by the routing table.

export const RETRY_CONDITIONS = [
  '5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
] as const;
export type RetryCondition = (typeof RETRY_CONDITIONS)[number];

export interface RetryPolicy {
  retryOn: ReadonlySet<RetryCondition>;
  numRetries: number;
  /** 0: an attempt may take the whole route timeout. */
  perTryTimeoutMs: number;
  retriableStatusCodes: ReadonlySet<number>;
  backoff: { baseMs: number; maxMs: number };
  /** Prefer endpoints not tried yet, drawing up to `hostSelectionAttempts` times. */
  previousHosts: boolean;
  hostSelectionAttempts: number;
}

/** Envoy's backoff when the policy sets none: base 25 ms, at most 10x. */
export const DEFAULT_BACKOFF = { baseMs: 25, maxMs: 250 } as const;

/** Envoy's FractionalPercent. */
export interface Fraction {
  numerator: number;
  /** 100, 10,000 or 1,000,000. */
  denominator: number;
}

export interface FaultConfig {
  delay?: { ms: number; percentage: Fraction };
  abort?: { httpStatus?: number; grpcStatus?: number; percentage: Fraction };
}
