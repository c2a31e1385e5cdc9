// Envoy's HTTP fault filter (envoy.filters.http.fault) as a route's typed_per_filter_config sets it:
// after the route is chosen and before anything is sent upstream, maybe a fixed delay (flag DI),
// then maybe an abort (flag FI) answered locally with Envoy's body "fault filter abort". A gRPC
// request is answered as Envoy answers it locally: 200 with grpc-status in the headers
// (trailers-only). The random source is the waypoint's, so tests can fix it.
import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import { sendTrailersOnly } from '../grpc-local-reply.ts';
import type { FaultConfig, Fraction } from '../router/policies.ts';

/** What the fault filter decided for one request. */
export interface FaultDecision {
  delayMs: number;
  abort?: { httpStatus?: number; grpcStatus?: number };
}

/** Envoy's featureEnabled: a draw below numerator out of denominator; a numerator at or over the denominator always hits. */
export function hit(p: Fraction, random: () => number): boolean {
  if (p.numerator <= 0) return false;
  if (p.numerator >= p.denominator) return true;
  return Math.floor(random() * p.denominator) < p.numerator;
}

/** The delay is drawn first, then the abort, as Envoy does (two independent draws). */
export function decideFault(f: FaultConfig, random: () => number): FaultDecision {
  const delayMs = f.delay && hit(f.delay.percentage, random) ? f.delay.ms : 0;
  const abort = f.abort && hit(f.abort.percentage, random) ? { httpStatus: f.abort.httpStatus, grpcStatus: f.abort.grpcStatus } : undefined;
  return { delayMs, abort };
}

/** Envoy's mapping of an HTTP status to a gRPC status for local replies to gRPC requests. */
export function grpcStatusOf(http: number): number {
  if (http === 400) return 13; // INTERNAL
  if (http === 401) return 16; // UNAUTHENTICATED
  if (http === 403) return 7; // PERMISSION_DENIED
  if (http === 404) return 12; // UNIMPLEMENTED
  if (http === 429 || http === 502 || http === 503 || http === 504) return 14; // UNAVAILABLE
  return 2; // UNKNOWN
}

export const FAULT_ABORT_BODY = 'fault filter abort';

export interface AbortReply {
  status: number;
  headers: Record<string, string | number>;
  body: string;
  grpcStatus?: number;
}

/**
 * The local answer to an aborted request. As Envoy: a gRPC status abort answers HTTP 200; a gRPC
 * request gets trailers-only with that status (or the one its HTTP status maps to).
 */
export function abortReply(abort: NonNullable<FaultDecision['abort']>, grpcRequest: boolean): AbortReply {
  const status = abort.httpStatus ?? 200;
  if (grpcRequest) {
    const grpcStatus = abort.grpcStatus ?? grpcStatusOf(status);
    return { status: 200, headers: { 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': FAULT_ABORT_BODY }, body: '', grpcStatus };
  }
  return { status, headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(FAULT_ABORT_BODY) }, body: FAULT_ABORT_BODY };
}

/** Waits `ms`, or less if `gone` settles first (the client left): true when the whole delay passed. */
export function faultDelay(ms: number, gone: Promise<void>): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(true), ms);
    void gone.then(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** The response side the fault filter writes to (either HTTP version's). */
type FaultResponse = ServerResponse | Http2ServerResponse;

/** What the filter did: its flags (DI, FI), and the request's end when it answered or the client left. */
export interface Injected {
  flags: string;
  ended?: { status: number; flags: string; details: string; responseBytes: number; grpcStatus?: number };
}

/** Runs the fault filter for one request: the delay, then the abort answered locally. */
export async function injectFault(f: FaultConfig, random: () => number, grpcRequest: boolean, req: { resume(): unknown }, res: FaultResponse): Promise<Injected> {
  const d = decideFault(f, random);
  const flags: string[] = [];
  if (d.delayMs > 0) {
    flags.push('DI');
    const gone = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
    if (!(await faultDelay(d.delayMs, gone)) || res.destroyed) {
      return { flags: 'DI', ended: { status: 0, flags: 'DC', details: 'downstream went away during the fault delay', responseBytes: 0 } };
    }
  }
  if (!d.abort) return { flags: flags.join(',') };
  flags.push('FI');
  req.resume();
  const a = abortReply(d.abort, grpcRequest);
  if (!res.headersSent && !res.destroyed) {
    if (grpcRequest) sendTrailersOnly(res, a.headers);
    else {
      res.writeHead(a.status, a.headers);
      res.end(a.body);
    }
  }
  return { flags: flags.join(','), ended: { status: a.status, flags: '-', details: 'fault_filter_abort', responseBytes: Buffer.byteLength(a.body), grpcStatus: a.grpcStatus } };
}
