// Envoy's router retries, for a route with a retry_policy: an attempt that fails by a condition of
// `retry_on` (a connect failure, a reset before the response, a refused HTTP/2 stream, a per-try
// timeout, a retriable status or gRPC status in the response headers: a trailers-only response)
// is tried again, up to num_retries times, after a jittered exponential backoff (Envoy's: base
// 25 ms, max 10x base), on another endpoint of the same cluster where there is one (the
// previous_hosts predicate). The route timeout covers every attempt and
// every wait. A retriable response is dropped before anything reaches the client; once the
// response has started there is no retry, and nothing more of the request body is kept. The
// request body is kept for replays up to a bound (Envoy's per_connection_buffer_limit, 1 MiB):
// past it nothing is kept and the request is not retried. Exhausted retries add the flag URX.
// An attempt goes out as HTTP/1.1 in a tunnel, or over another Transport (forward-h2.ts: a
// stream on a pooled HTTP/2 session); the loop is the same for both.
import type { IncomingHttpHeaders } from 'node:http';
import { Readable, type Duplex } from 'node:stream';
import { HboneError } from '../../hbone/errors.ts';
import { joinFlags } from '../response-flags.ts';
import type { RetryCondition, RetryPolicy } from '../router/policies.ts';
import type { Endpoint } from '../router/table.ts';
import type { Balancer } from './balancer.ts';
import { forwardOver, openTunnel, type Exchange, type ForwardResult, type UpstreamOptions } from './forward.ts';

/** The gRPC statuses (from grpc-status in the response headers) the gRPC conditions name. */
const GRPC_CONDITIONS: Record<number, RetryCondition> = { 1: 'cancelled', 4: 'deadline-exceeded', 8: 'resource-exhausted', 13: 'internal', 14: 'unavailable' };

/** Envoy's default per_connection_buffer_limit_bytes: the most of a request body kept for replays. */
export const RETRY_BUFFER_BYTES = 1024 * 1024;

/**
 * How an attempt failed, when it did not end in a response passed on. `refused-stream`: the
 * upstream never processed it (HTTP/2 REFUSED_STREAM, or past a GOAWAY's last stream).
 */
export type AttemptFailure = 'connect-failure' | 'reset' | 'refused-stream' | 'per-try-timeout';

/** Whether a response with this status (and grpc-status, if in the headers) is retried by the policy. */
export function retriableResponse(p: RetryPolicy, status: number, grpcStatus?: number): boolean {
  const on = p.retryOn;
  if (on.has('5xx') && status >= 500) return true;
  if (on.has('gateway-error') && status >= 502 && status <= 504) return true;
  if (on.has('retriable-4xx') && status === 409) return true;
  if (on.has('retriable-status-codes') && p.retriableStatusCodes.has(status)) return true;
  const g = grpcStatus === undefined ? undefined : GRPC_CONDITIONS[grpcStatus];
  return g !== undefined && on.has(g);
}

/**
 * Whether a failure without a response is retried, as Envoy's RetryStateImpl::wouldRetryFromReset:
 * `reset` takes every kind (a connect failure is a reset too), 5xx and gateway-error count it as a
 * 5xx, `connect-failure` and `refused-stream` take their own kind.
 */
export function retriableFailure(p: RetryPolicy, f: AttemptFailure): boolean {
  const on = p.retryOn;
  if (on.has('reset') || on.has('5xx') || on.has('gateway-error')) return true;
  if (f === 'connect-failure') return on.has('connect-failure');
  return f === 'refused-stream' && on.has('refused-stream');
}

/** Envoy's JitteredExponentialBackOffStrategy: the wait before each retry, drawn from [0, (2^n - 1) x base), at most max. */
export class Backoff {
  private n = 1;

  constructor(
    private readonly b: { baseMs: number; maxMs: number },
    private readonly random: () => number,
  ) {}

  next(): number {
    const ceiling = (2 ** this.n - 1) * this.b.baseMs;
    if (ceiling <= this.b.maxMs) this.n++;
    return Math.min(Math.floor(this.random() * ceiling), this.b.maxMs);
  }
}

/** Bytes held for replays across the waypoint: `held` now (0 when idle), the `peak` seen. */
export interface ReplayMeter {
  held: number;
  peak: number;
}

/**
 * The request body, read once from the client and handed to one attempt at a time: a new attempt
 * gets what was kept, then the rest as it arrives. Keeps at most `limit` bytes; past that it keeps
 * nothing and cannot replay. Backpressure follows the current attempt.
 */
export class ReplayBody {
  private chunks: Buffer[] = [];
  private held = 0;
  private current?: Readable;
  total = 0;
  private ended = false;
  private overflowed = false;
  private closed = false;
  /** The response was passed on: no more retries, so nothing more is kept (a long stream holds no replay bytes). */
  private stopped = false;

  constructor(
    private readonly src: Readable,
    private readonly limit: number,
    private readonly meter?: ReplayMeter,
  ) {
    src.on('data', (c: Buffer) => {
      if (this.closed) return; // read and dropped, as node:http drops an unread body
      this.total += c.length;
      if (!this.overflowed && !this.stopped) {
        if (this.held + c.length > limit) {
          this.overflowed = true;
          this.release();
        } else {
          this.chunks.push(c);
          this.hold(c.length);
        }
      }
      if (!this.current) src.pause();
      else if (!this.current.push(c)) src.pause();
    });
    src.once('end', () => {
      this.ended = true;
      this.current?.push(null);
    });
    src.pause();
  }

  /** Whether another attempt can have the whole body. */
  get replayable(): boolean {
    return !this.overflowed;
  }

  /** The body for the next attempt (the previous attempt's stream is closed). */
  stream(): Readable {
    this.detach();
    const s: Readable = new Readable({
      read: () => {
        if (this.current === s && !this.ended) this.src.resume();
      },
    });
    for (const c of this.chunks) s.push(c);
    if (this.ended) s.push(null);
    this.current = s;
    return s;
  }

  /** No attempt will follow the current one: what was kept is let go, the rest streams through. */
  stopKeeping(): void {
    this.stopped = true;
    this.release();
  }

  /** The request is done: nothing more is kept, the rest of the body (if any) is read and dropped. */
  close(): void {
    if (this.closed) return;
    this.detach();
    this.release();
    this.closed = true;
    if (!this.ended) this.src.resume();
  }

  private detach(): void {
    const s = this.current;
    this.current = undefined;
    if (s && !s.destroyed) s.destroy();
    if (!this.ended) this.src.pause();
  }

  private hold(n: number): void {
    this.held += n;
    if (this.meter) {
      this.meter.held += n;
      this.meter.peak = Math.max(this.meter.peak, this.meter.held);
    }
  }

  private release(): void {
    if (this.meter) this.meter.held -= this.held;
    this.held = 0;
    this.chunks = [];
  }
}

/** A retry's endpoint: the balancer's next one, redrawn (up to the policy's attempts) while it was tried already. */
export function nextEndpoint(p: RetryPolicy, balancer: Balancer, cluster: string, endpoints: readonly Endpoint[], tried: ReadonlySet<string>): Endpoint | undefined {
  let e = balancer.endpoint(cluster, endpoints);
  if (!p.previousHosts) return e;
  for (let i = 1; i < Math.max(1, p.hostSelectionAttempts) && e && tried.has(endpointKey(e)); i++) e = balancer.endpoint(cluster, endpoints);
  return e;
}

export const endpointKey = (e: Endpoint) => `${e.address}:${e.port}`;

type Target = { endpoint: Endpoint; identity: string };

/** One attempt's connection, ready to carry the exchange. */
export interface Attempt<X extends Exchange> {
  send(x: X, timeoutMs: number): Promise<ForwardResult>;
  /** The route deadline passed while connecting: let the connection go (or keep it pooled). */
  abandon(): void;
}

/** How attempts reach an endpoint: connect throws (HboneError) when it cannot, a connect failure. */
export interface Transport<X extends Exchange> {
  connect(target: Target): Promise<Attempt<X>>;
}

export interface RetryRun<X extends Exchange = Exchange> {
  policy: RetryPolicy;
  /** The route timeout (0: none): it covers every attempt and every wait between them. */
  timeoutMs: number;
  random: () => number;
  upstream: UpstreamOptions;
  /** The request and response, as for a single forward (its body is the client's request). */
  exchange: Omit<X, 'accept'>;
  bufferLimit: number;
  meter?: ReplayMeter;
  first: { endpoint: Endpoint; identity: string };
  /** The endpoint and identity for a retry, given those tried; undefined: none left. */
  pick(tried: ReadonlySet<string>): { endpoint: Endpoint; identity: string } | undefined;
  /** Each attempt's endpoint, as it starts. */
  onAttempt?(endpoint: Endpoint, n: number): void;
  /** Each attempt's outcome, once, for the endpoint it went to (outlier detection, requests in flight). */
  onAttemptResult?(endpoint: Endpoint, r: ForwardResult): void;
  /** An attempt's tunnel (a pooled one, h1-pool.ts); default a new tunnel each time. */
  open?(target: { endpoint: Endpoint; identity: string }): Promise<Duplex>;
  /** For a tunnel that may be kept after its exchange: how to hand it back (with the endpoint's keep-alive hint). */
  keep?(tunnel: Duplex, target: { endpoint: Endpoint; identity: string }): (hintMs: number | undefined) => void;
  /** Another way to the endpoints (HTTP/2 sessions); default HTTP/1.1 in a tunnel (open, keep). */
  transport?: Transport<X>;
}

/** HTTP/1.1 in a tunnel: a new one each attempt, or the run's pooled ones. */
function tunnels(run: Pick<RetryRun, 'upstream' | 'open' | 'keep'>): Transport<Exchange> {
  return {
    connect: async (target) => {
      const tunnel = await (run.open ? run.open(target) : openTunnel(run.upstream, target.endpoint, target.identity, {}));
      return { send: (x, timeoutMs) => forwardOver(tunnel, x, timeoutMs, run.keep?.(tunnel, target)), abandon: () => tunnel.destroy() };
    },
  };
}

export interface RetryResult extends ForwardResult {
  attempts: number;
}

const grpcStatusIn = (h: IncomingHttpHeaders) => (h['grpc-status'] === undefined ? undefined : Number(h['grpc-status']));

/** Forwards with retries; on failure nothing has been written to the client (the caller answers locally). */
export async function forwardWithRetries<X extends Exchange>(run: RetryRun<X>): Promise<RetryResult> {
  const { policy } = run;
  const transport: Transport<X> = run.transport ?? tunnels(run);
  const deadline = run.timeoutMs > 0 ? Date.now() + run.timeoutMs : Infinity;
  const body = new ReplayBody(run.exchange.body, run.bufferLimit, run.meter);
  const backoff = new Backoff(policy.backoff, run.random);
  const tried = new Set<string>();
  let gone = false;
  void run.exchange.gone.then(() => (gone = true));
  let target = run.first;
  let retriesLeft = policy.numRetries;
  let attempts = 0;
  /** The response passed on was one the policy retries (by its headers). */
  let passedRetriable = false;
  const canRetry = () => retriesLeft > 0 && body.replayable && !gone;
  const done = (r: ForwardResult, exhausted = false): RetryResult => {
    body.close();
    return { ...r, flags: exhausted ? joinFlags(r.flags, 'URX') : r.flags, requestBytes: body.total, attempts };
  };
  try {
    for (;;) {
      attempts++;
      tried.add(endpointKey(target.endpoint));
      run.onAttempt?.(target.endpoint, attempts);
      const remaining = deadline - Date.now();
      const perTry = policy.perTryTimeoutMs > 0 && policy.perTryTimeoutMs < remaining;
      const attemptTimeout = perTry ? policy.perTryTimeoutMs : Number.isFinite(remaining) ? Math.max(1, remaining) : 0;

      let r: ForwardResult;
      let failure: AttemptFailure | undefined;
      try {
        const attempt = await beforeDeadline(transport.connect(target), deadline);
        if (!attempt) {
          const late: ForwardResult = { status: 504, flags: 'UT', details: `route timeout ${run.timeoutMs} ms (while connecting)`, requestBytes: 0, responseBytes: 0 };
          run.onAttemptResult?.(target.endpoint, late);
          return done(late);
        }
        const accept = (status: number, h: IncomingHttpHeaders) => {
          // Judged on the headers alone: a gRPC status in the trailers of a response that began is never retried, nor URX.
          passedRetriable = retriableResponse(policy, status, grpcStatusIn(h));
          if (passedRetriable && canRetry()) return false;
          body.stopKeeping();
          return true;
        };
        const x = { ...run.exchange, body: body.stream(), accept } as X;
        r = await attempt.send(x, attemptTimeout);
        if (r.flags === 'UT' && !r.discarded && r.status === 504 && perTry) failure = 'per-try-timeout';
        else if (r.flags === 'UC' || r.reset) failure = r.reset === 'refused' ? 'refused-stream' : 'reset';
      } catch (e) {
        if (gone) {
          const left: ForwardResult = { status: 0, flags: 'DC', details: (e as Error).message, requestBytes: 0, responseBytes: 0 };
          run.onAttemptResult?.(target.endpoint, left);
          return done(left);
        }
        const details = e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message;
        r = { status: 503, flags: 'UF', details, requestBytes: 0, responseBytes: 0 };
        failure = 'connect-failure';
      }

      run.onAttemptResult?.(target.endpoint, r);
      if (r.discarded) {
        // accept() refused it only when a retry was possible; the client may have gone since.
        if (gone) return done({ ...r, status: 0, flags: 'DC', details: 'downstream went away' });
      } else if (!failure) {
        // Passed on to the client: a retriable one that could not be retried any more is URX.
        return done(r, r.flags === '-' && retriesLeft === 0 && body.replayable && passedRetriable);
      } else if (run.exchange.headersSent() || !canRetry() || !retriableFailure(policy, failure)) {
        return done(r, retriesLeft === 0 && retriableFailure(policy, failure));
      }

      const wait = backoff.next();
      if (Date.now() + wait >= deadline) {
        await sleep(Math.max(0, deadline - Date.now()), run.exchange.gone);
        if (gone) return done({ ...r, status: 0, flags: 'DC', details: 'downstream went away' });
        return done({ status: 504, flags: 'UT', details: `route timeout ${run.timeoutMs} ms (while waiting to retry)`, requestBytes: 0, responseBytes: 0 });
      }
      await sleep(wait, run.exchange.gone);
      if (gone) return done({ ...r, status: 0, flags: 'DC', details: 'downstream went away' });
      retriesLeft--;
      target = run.pick(tried) ?? target;
    }
  } finally {
    body.close();
  }
}

/** The attempt's connection, or undefined when the route deadline passes first (one made later is abandoned). */
async function beforeDeadline<A extends { abandon(): void }>(open: Promise<A>, deadline: number): Promise<A | undefined> {
  if (!Number.isFinite(deadline)) return open;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()));
  });
  try {
    const t = await Promise.race([open, late]);
    if (!t) void open.then((a) => a.abandon(), () => {});
    return t;
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number, gone: Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    void gone.then(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
