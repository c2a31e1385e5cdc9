// The client side's one account of failure, for both transports (node/client.ts, native/client.ts):
// the deadlines of opening a session and of a CONNECT's response, and the HboneError kind and message
// of each way they fail (dial, tls, timeout, status, stream), so the agent counts and logs them alike
// whichever data path carried the attempt.
import { constants } from 'node:http2';
import type { Socket } from 'node:net';
import { formatAuthority } from '../authority.ts';
import { HboneError, StreamRefused, type HboneFailure } from '../errors.ts';
import type { SessionParams } from './contract.ts';

type Stage = 'dial' | 'tls' | 'h2' | 'done';

/**
 * Opening one session: a deadline over its stages (from the dial until `deadlineDone()` or the end),
 * the dial itself, and failures as HboneError. `cleanup` runs once on failure.
 */
export class SessionOpening<S> {
  readonly target: string;
  readonly promise: Promise<S>;
  private stageNow: Stage = 'dial';
  private timer?: NodeJS.Timeout;
  private resolveFn!: (s: S) => void;
  private rejectFn!: (e: HboneError) => void;
  cleanup: () => void = () => {};

  constructor(private readonly p: SessionParams) {
    this.target = formatAuthority({ address: p.dstAddress, port: p.port });
    this.promise = new Promise<S>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
    this.timer = setTimeout(() => this.fail('timeout', `HBONE connect to ${this.target} timed out in ${this.stageNow}`), p.timeoutMs);
  }

  get stage(): Stage {
    return this.stageNow;
  }

  get done(): boolean {
    return this.stageNow === 'done';
  }

  /** Dials; the socket goes to `next` unless the opening failed meanwhile (then it is destroyed). */
  dial(next: (sock: Socket) => void): void {
    this.p.dial().then(
      (sock) => {
        if (this.done) return void sock.destroy(); // timed out meanwhile
        next(sock);
      },
      (e: NodeJS.ErrnoException) => this.fail('dial', `dial ${this.target}: ${e.code ?? e.message}`, e),
    );
  }

  enter(stage: 'tls' | 'h2'): void {
    if (!this.done) this.stageNow = stage;
  }

  /** From here on the transport keeps its own deadline (the native relay's connect timeout). */
  deadlineDone(): void {
    clearTimeout(this.timer);
  }

  succeed(s: S): boolean {
    if (this.done) return false;
    this.stageNow = 'done';
    clearTimeout(this.timer);
    this.resolveFn(s);
    return true;
  }

  fail(kind: HboneFailure, message: string, cause?: unknown): void {
    if (this.done) return;
    this.stageNow = 'done';
    clearTimeout(this.timer);
    this.cleanup();
    this.rejectFn(new HboneError(kind, message, undefined, cause === undefined ? undefined : { cause }));
  }

  /** TLS (or the session's start) failed: a handshake error, a refused certificate, no settings. */
  failTls(reason: string, cause?: unknown, kind: HboneFailure = 'tls'): void {
    this.fail(kind, `TLS with ${this.target}: ${reason}`, cause);
  }
}

/**
 * One CONNECT waiting for its response: the response deadline (which cancels the stream), then a
 * tunnel on 200 or the error for anything else.
 */
export class PendingConnect<T> {
  readonly promise: Promise<T>;
  private settled = false;
  private readonly timer: NodeJS.Timeout;
  private resolveFn!: (t: T) => void;
  private rejectFn!: (e: HboneError) => void;

  constructor(private readonly authority: string, timeoutMs: number, cancel: () => void) {
    this.promise = new Promise<T>((resolve, reject) => {
      this.resolveFn = resolve;
      this.rejectFn = reject;
    });
    this.timer = setTimeout(() => {
      cancel();
      this.reject(new HboneError('timeout', `HBONE CONNECT ${authority}: no response in ${timeoutMs} ms`));
    }, timeoutMs);
  }

  /** The response arrived: resolves with `tunnel()` on 200; returns false (the caller may cancel) otherwise. */
  response(status: number, tunnel: () => T): boolean {
    if (status === 200) {
      if (this.settle()) this.resolveFn(tunnel());
      return true;
    }
    this.reject(new HboneError('status', `HBONE CONNECT ${this.authority}: ${status}`, status));
    return false;
  }

  /** The stream ended: before any response (`status` 0, with its RST code), or after a refusal. */
  closed(rstCode: number, status = 0): void {
    // Every stream reports its end, most after their 200: no error (and stack trace) to build then.
    if (this.settled) return;
    if (status !== 0) return this.reject(new HboneError('status', `HBONE CONNECT ${this.authority}: ${status}`, status));
    this.reject(closedBeforeResponse(this.authority, rstCode));
  }

  private reject(e: HboneError): void {
    if (this.settle()) this.rejectFn(e);
  }

  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    return true;
  }
}

/** A stream that ended before any response: REFUSED_STREAM may be retried on another session. */
export function closedBeforeResponse(authority: string, code: number): HboneError {
  const msg = `HBONE CONNECT ${authority}: stream closed before a response (code ${code})`;
  return code === constants.NGHTTP2_REFUSED_STREAM ? new StreamRefused('stream', msg) : new HboneError('stream', msg);
}

/** The stream a session would not start (closing, gone): another session may take it. */
export function sessionUnusable(e: unknown): StreamRefused {
  return new StreamRefused('stream', `HBONE session unusable: ${(e as Error).message}`, undefined, { cause: e });
}

/** relay() handed a socket that was already closed, or a stream that already ended. */
export const SOCKET_CLOSED_BEFORE_TUNNEL = 'socket closed before the tunnel started';
export const STREAM_CLOSED_BEFORE_TUNNEL = 'stream closed before the tunnel started';
