// Retry policies and fault configs as the waypoint reads them from Envoy routes: Envoy's defaults
// (one retry, 25 ms backoff capped at 10x, a missing percentage is 0 %), the three denominators,
// the NACKs for what it does not act on; and the pieces the retry loop and the fault filter decide
// with (Envoy's jittered exponential backoff, which responses and failures are retriable).
import { describe, expect, it } from 'vitest';
import { any, encode } from '../../../src/control/xds/envoy/messages.ts';
import { decideFault, hit } from '../../../src/waypoint/filters/fault.ts';
import { joinFlags } from '../../../src/waypoint/response-flags.ts';
import { Backoff, retriableFailure, retriableResponse } from '../../../src/waypoint/upstream/retry.ts';
import { compileRouteConfig } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';

const RC = 'envoy.config.route.v3.RouteConfiguration';
const HTTP_FAULT = 'envoy.extensions.filters.http.fault.v3.HTTPFault';
const one = (route: object) => compileRouteConfig(decodeEnvoy(RC, encode(RC, { name: 'web:80', virtualHosts: [{ name: 'web:80', domains: ['web'], routes: [{ name: 'r', match: { prefix: '/' }, ...route }] }] }))).virtualHosts[0]!.routes[0]!;
const retry = (retryPolicy: object) => one({ route: { cluster: 'c', retryPolicy } }).retry!;
const fault = (f: Record<string, unknown>) => one({ route: { cluster: 'c' }, typedPerFilterConfig: { 'envoy.filters.http.fault': any(HTTP_FAULT, f) } }).fault!;

describe('waypoint retry policy and fault config', () => {
  it('reads a retry policy with Envoy defaults', () => {
    const p = retry({ retryOn: 'connect-failure,retriable-status-codes', retriableStatusCodes: [503] });
    expect(p).toMatchObject({ numRetries: 1, perTryTimeoutMs: 0, backoff: { baseMs: 25, maxMs: 250 }, previousHosts: false, hostSelectionAttempts: 1 });
    expect([...p.retryOn]).toEqual(['connect-failure', 'retriable-status-codes']);
    expect([...p.retriableStatusCodes]).toEqual([503]);
    const q = retry({ retryOn: '5xx', numRetries: { value: 4 }, perTryTimeout: { nanos: 300_000_000 }, retryBackOff: { baseInterval: { nanos: 10_000_000 } }, hostSelectionRetryMaxAttempts: 5, retryHostPredicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }] });
    expect(q).toMatchObject({ numRetries: 4, perTryTimeoutMs: 300, backoff: { baseMs: 10, maxMs: 100 }, previousHosts: true, hostSelectionAttempts: 5 });
    expect(one({ route: { cluster: 'c' } }).retry).toBeUndefined();
  });

  it('refuses retry policies it would not act on as Envoy does', () => {
    expect(() => retry({ retryOn: '5xx,envoy-ratelimited' })).toThrow(/\(r\)\.route\.retry_policy\.retry_on: envoy-ratelimited is not a retry condition the waypoint acts on/);
    expect(() => retry({ retryOn: '5xx', retriableHeaders: [{ name: 'x', presentMatch: true }] })).toThrow(/retry_policy\.retriable_headers: not supported/);
    expect(() => retry({ retryOn: '5xx', retryPriority: { name: 'envoy.retry_priorities.previous_priorities' } })).toThrow(/retry_policy\.retry_priority: not supported/);
    expect(() => retry({ retryOn: '5xx', retryHostPredicate: [{ name: 'envoy.retry_host_predicates.omit_canary_hosts' }] })).toThrow(/retry_host_predicate\[0\]: envoy\.retry_host_predicates\.omit_canary_hosts is not supported/);
    expect(() => retry({ retryOn: '5xx', retryBackOff: { baseInterval: { nanos: 50_000_000 }, maxInterval: { nanos: 10_000_000 } } })).toThrow(/max_interval: less than base_interval/);
  });

  it('reads delays and aborts with their percentages (HUNDRED, TEN_THOUSAND, MILLION; absent is 0 %)', () => {
    expect(fault({ delay: { fixedDelay: { nanos: 200_000_000 }, percentage: { numerator: 25 } }, abort: { httpStatus: 418, percentage: { numerator: 5, denominator: 'TEN_THOUSAND' } } })).toEqual({
      delay: { ms: 200, percentage: { numerator: 25, denominator: 100 } },
      abort: { httpStatus: 418, percentage: { numerator: 5, denominator: 10_000 } },
    });
    expect(fault({ abort: { grpcStatus: 14, percentage: { numerator: 1, denominator: 'MILLION' } } })).toEqual({ abort: { grpcStatus: 14, percentage: { numerator: 1, denominator: 1_000_000 } } });
    expect(fault({ abort: { httpStatus: 503 } }).abort!.percentage.numerator).toBe(0);
  });

  it('refuses faults it cannot serve, naming the field', () => {
    expect(() => fault({ delay: { headerDelay: {} } })).toThrow(/\(r\)\.typed_per_filter_config\["envoy\.filters\.http\.fault"\]\.delay\.header_delay: header-controlled faults/);
    expect(() => fault({ abort: { headerAbort: {} } })).toThrow(/abort\.header_abort: header-controlled faults/);
    expect(() => fault({ abort: { httpStatus: 503 }, maxActiveFaults: { value: 1 } })).toThrow(/max_active_faults: not supported/);
    expect(() => fault({ abort: { httpStatus: 503 }, headers: [{ name: 'x', presentMatch: true }] })).toThrow(/\.headers: not supported/);
    expect(() => fault({ abort: { httpStatus: 503 }, responseRateLimit: { fixedLimit: { limitKbps: 1 } } })).toThrow(/response_rate_limit: not supported/);
    expect(() => fault({ abort: { httpStatus: 700 } })).toThrow(/http_status: 700 is not in \[200, 600\)/);
    expect(() => one({ route: { cluster: 'c' }, typedPerFilterConfig: { 'envoy.filters.http.fault': any('envoy.extensions.filters.http.router.v3.Router', {}) } })).toThrow(/is not an envoy\.extensions\.filters\.http\.fault\.v3\.HTTPFault/);
  });

  it('draws percentages and backoffs as Envoy does', () => {
    const draws = (...xs: number[]) => () => xs.shift()!;
    expect(hit({ numerator: 1, denominator: 1_000_000 }, draws(0.0000009))).toBe(true);
    expect(hit({ numerator: 1, denominator: 1_000_000 }, draws(0.000001))).toBe(false);
    expect(hit({ numerator: 200, denominator: 100 }, draws(0.99))).toBe(true);
    expect(hit({ numerator: 0, denominator: 100 }, draws(0))).toBe(false);
    // The delay is drawn before the abort.
    expect(decideFault({ delay: { ms: 5, percentage: { numerator: 50, denominator: 100 } }, abort: { httpStatus: 503, percentage: { numerator: 50, denominator: 100 } } }, draws(0.9, 0.1))).toEqual({ delayMs: 0, abort: { httpStatus: 503, grpcStatus: undefined } });
    // Jittered exponential: [0, 25), [0, 75), [0, 175), then capped at 250 ms.
    const top = new Backoff({ baseMs: 25, maxMs: 250 }, () => 0.999999);
    expect([top.next(), top.next(), top.next(), top.next(), top.next()]).toEqual([24, 74, 174, 250, 250]);
    expect(new Backoff({ baseMs: 25, maxMs: 250 }, () => 0).next()).toBe(0);
  });

  it('knows which responses and failures a policy retries', () => {
    const p = retry({ retryOn: 'gateway-error,retriable-4xx,retriable-status-codes,unavailable', retriableStatusCodes: [418] });
    expect([500, 502, 503, 504, 409, 418, 404].map((s) => retriableResponse(p, s))).toEqual([false, true, true, true, true, true, false]);
    expect(retriableResponse(p, 200, 14)).toBe(true);
    expect(retriableResponse(p, 200, 13)).toBe(false);
    expect(retriableFailure(p, 'per-try-timeout')).toBe(true);
    const c = retry({ retryOn: 'connect-failure' });
    expect([retriableFailure(c, 'connect-failure'), retriableFailure(c, 'reset'), retriableFailure(c, 'per-try-timeout')]).toEqual([true, false, false]);
    expect(retriableResponse(c, 503)).toBe(false);
    expect(joinFlags('URX', 'UF')).toBe('UF,URX');
    expect(joinFlags('DI', '-')).toBe('DI');
    expect(joinFlags('FI', 'DI', 'FI')).toBe('DI,FI');
  });
});
