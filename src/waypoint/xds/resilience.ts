// A route's retry_policy and its fault filter config (typed_per_filter_config
// "envoy.filters.http.fault", an HTTPFault), checked whole: whatever the waypoint would not act on
// as Envoy does (header-controlled faults, retriable headers, rate-limited backoff, retry
// priorities, another host predicate, an unknown retry condition) is refused with the field named.
import { DEFAULT_BACKOFF, RETRY_CONDITIONS, type FaultConfig, type Fraction, type RetryCondition, type RetryPolicy } from '../router/policies.ts';
import { decodeEnvoy, type Msg } from './envoy.ts';

export const FAULT_FILTER = 'envoy.filters.http.fault';
const HTTP_FAULT = 'envoy.extensions.filters.http.fault.v3.HTTPFault';
const PREVIOUS_HOSTS = 'envoy.retry_host_predicates.previous_hosts';
const PREVIOUS_HOSTS_TYPE = 'envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const ms = (d: unknown): number | undefined => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : undefined;
};
/** Fields of a message other than `allowed` (oneof discriminators, which the decoder adds, are not fields). */
function refuseOthers(m: Msg, allowed: readonly string[], field: string, oneofs: readonly string[] = []): void {
  for (const k of Object.keys(m)) {
    if (allowed.includes(k) || oneofs.includes(k)) continue;
    throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
}
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

export function compileRetryPolicy(rp: Msg, field: string): RetryPolicy {
  const f = `${field}.retry_policy`;
  refuseOthers(rp, ['retryOn', 'numRetries', 'perTryTimeout', 'retriableStatusCodes', 'retryBackOff', 'retryHostPredicate', 'hostSelectionRetryMaxAttempts'], f);
  const retryOn = new Set<RetryCondition>();
  for (const c of String(rp.retryOn ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (!(RETRY_CONDITIONS as readonly string[]).includes(c)) throw new Error(`${f}.retry_on: ${c} is not a retry condition the waypoint acts on (${RETRY_CONDITIONS.join(', ')})`);
    retryOn.add(c as RetryCondition);
  }
  // UInt32Value: absent is Envoy's default of 1; {} is an explicit 0.
  const nr = obj(rp.numRetries);
  const numRetries = nr ? Number(nr.value ?? 0) : 1;
  const codes = (Array.isArray(rp.retriableStatusCodes) ? (rp.retriableStatusCodes as number[]) : []).map(Number);
  for (const c of codes) if (!Number.isInteger(c) || c < 100 || c > 599) throw new Error(`${f}.retriable_status_codes: ${c} is not an HTTP status`);
  let backoff: { baseMs: number; maxMs: number } = DEFAULT_BACKOFF;
  const bo = obj(rp.retryBackOff);
  if (bo) {
    const baseMs = ms(bo.baseInterval) ?? 0;
    if (baseMs <= 0) throw new Error(`${f}.retry_back_off.base_interval: must be more than 0`);
    const maxMs = ms(bo.maxInterval) ?? baseMs * 10;
    if (maxMs < baseMs) throw new Error(`${f}.retry_back_off.max_interval: less than base_interval`);
    backoff = { baseMs, maxMs };
  }
  let previousHosts = false;
  (Array.isArray(rp.retryHostPredicate) ? (rp.retryHostPredicate as Msg[]) : []).forEach((p, i) => {
    const typeUrl = String(obj(p.typedConfig)?.typeUrl ?? obj(p.typedConfig)?.type_url ?? '');
    if (p.name !== PREVIOUS_HOSTS && !typeUrl.endsWith(`/${PREVIOUS_HOSTS_TYPE}`)) throw new Error(`${f}.retry_host_predicate[${i}]: ${String(p.name)} is not supported by the waypoint (only ${PREVIOUS_HOSTS})`);
    previousHosts = true;
  });
  return {
    retryOn,
    numRetries,
    perTryTimeoutMs: ms(rp.perTryTimeout) ?? 0,
    retriableStatusCodes: new Set(codes),
    backoff,
    previousHosts,
    hostSelectionAttempts: Math.max(1, Number(rp.hostSelectionRetryMaxAttempts ?? 1)),
  };
}

const DENOMINATORS: Record<string, number> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 };

/** FractionalPercent; absent is 0 % (Envoy's default for the fault filter). */
function fraction(v: unknown, field: string): Fraction {
  const p = obj(v);
  if (!p) return { numerator: 0, denominator: 100 };
  const denominator = DENOMINATORS[String(p.denominator ?? 'HUNDRED')];
  if (!denominator) throw new Error(`${field}.denominator: ${String(p.denominator)} is not HUNDRED, TEN_THOUSAND or MILLION`);
  return { numerator: Number(p.numerator ?? 0), denominator };
}

/** The route's typed_per_filter_config["envoy.filters.http.fault"] (an Any holding an HTTPFault). */
export function compileFault(any: unknown, field: string): FaultConfig {
  const f = `${field}.typed_per_filter_config["${FAULT_FILTER}"]`;
  const a = obj(any);
  const typeUrl = String(a?.typeUrl ?? a?.type_url ?? '');
  if (!typeUrl.endsWith(`/${HTTP_FAULT}`)) throw new Error(`${f}: ${typeUrl || 'empty'} is not an ${HTTP_FAULT}`);
  let m: Msg;
  try {
    m = decodeEnvoy(HTTP_FAULT, (a?.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${f}: does not decode: ${(e as Error).message}`, { cause: e });
  }
  refuseOthers(m, ['delay', 'abort'], f);
  const out: FaultConfig = {};
  const d = obj(m.delay);
  if (d) {
    if (d.headerDelay !== undefined) throw new Error(`${f}.delay.header_delay: header-controlled faults are not supported by the waypoint`);
    refuseOthers(d, ['fixedDelay', 'percentage'], `${f}.delay`, ['faultDelaySecifier']);
    const delayMs = ms(d.fixedDelay) ?? 0;
    if (delayMs <= 0) throw new Error(`${f}.delay.fixed_delay: must be more than 0`);
    out.delay = { ms: delayMs, percentage: fraction(d.percentage, `${f}.delay.percentage`) };
  }
  const ab = obj(m.abort);
  if (ab) {
    if (ab.headerAbort !== undefined) throw new Error(`${f}.abort.header_abort: header-controlled faults are not supported by the waypoint`);
    refuseOthers(ab, ['httpStatus', 'grpcStatus', 'percentage'], `${f}.abort`, ['errorType']);
    const percentage = fraction(ab.percentage, `${f}.abort.percentage`);
    if (typeof ab.httpStatus === 'number') {
      // Envoy's range for an abort status: [200, 600).
      if (!Number.isInteger(ab.httpStatus) || ab.httpStatus < 200 || ab.httpStatus >= 600) throw new Error(`${f}.abort.http_status: ${ab.httpStatus} is not in [200, 600)`);
      out.abort = { httpStatus: ab.httpStatus, percentage };
    } else if (typeof ab.grpcStatus === 'number') out.abort = { grpcStatus: ab.grpcStatus, percentage };
    else if (ab.errorType === 'httpStatus') throw new Error(`${f}.abort.http_status: 0 is not in [200, 600)`);
    else if (ab.errorType === 'grpcStatus') out.abort = { grpcStatus: 0, percentage };
    else throw new Error(`${f}.abort: needs http_status or grpc_status`);
  }
  return out;
}
