// One request to an authorizer and its whole (small) answer, over an HTTP/2 session or an HTTP/1.1
// byte stream, with what a hostile or broken authorizer controls bounded: the time (the call's
// timeout), the answer's size and its header count. A client that goes away (its signal) cancels
// the call. Nothing here outlives the call: a timed-out or cancelled stream is reset.
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import http2, { type ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export interface Bounds {
  timeoutMs: number;
  /** Most bytes of body accepted. */
  maxBytes: number;
  /** Most header fields accepted (response headers, trailers). */
  maxHeaders: number;
  signal?: AbortSignal;
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  trailers: IncomingHttpHeaders;
}

/** Why a call failed: `timeout` (the call's deadline) and `cancelled` (the client left) are told apart from the rest. */
export class CallError extends Error {
  constructor(
    readonly kind: 'timeout' | 'cancelled' | 'failed',
    message: string,
  ) {
    super(message);
  }
}

const fieldCount = (h: IncomingHttpHeaders) => Object.keys(h).length;

/** A deadline and the client's signal for one call: `fail` ends it with the reason. */
function guard(b: Bounds, fail: (e: CallError) => void): () => void {
  const timer = setTimeout(() => fail(new CallError('timeout', `no answer within ${b.timeoutMs} ms`)), b.timeoutMs);
  const abort = () => fail(new CallError('cancelled', 'the client went away'));
  b.signal?.addEventListener('abort', abort, { once: true });
  return () => {
    clearTimeout(timer);
    b.signal?.removeEventListener('abort', abort);
  };
}

/**
 * Waits for `p` (a session or connection being opened) within the call's bounds; what opens after
 * the call gave up is handed to `late` (closed, or left to its pool).
 */
export function within<T>(p: Promise<T>, b: Bounds, late: (v: T) => void = () => {}): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const unguard = guard(b, (e) => {
      done = true;
      unguard();
      reject(e);
    });
    p.then(
      (v) => {
        if (done) return late(v);
        done = true;
        unguard();
        resolve(v);
      },
      (e: Error) => {
        if (done) return;
        done = true;
        unguard();
        reject(new CallError('failed', e.message));
      },
    );
  });
}

export function h2Exchange(session: ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body: Buffer, b: Bounds): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    if (b.signal?.aborted) return reject(new CallError('cancelled', 'the client went away'));
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers);
    } catch (e) {
      return reject(new CallError('failed', (e as Error).message));
    }
    let done = false;
    const chunks: Buffer[] = [];
    let size = 0;
    let answer: Answer | undefined;
    const finish = (e?: CallError) => {
      if (done) return;
      done = true;
      unguard();
      if (e || !answer) {
        if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
        return reject(e ?? new CallError('failed', 'stream closed before a response'));
      }
      answer.body = Buffer.concat(chunks);
      resolve(answer);
    };
    const unguard = guard(b, finish);
    stream.on('error', (e) => finish(new CallError('failed', e.message)));
    stream.on('response', (h) => {
      if (fieldCount(h) > b.maxHeaders) return finish(new CallError('failed', `more than ${b.maxHeaders} response headers`));
      answer = { status: Number(h[':status'] ?? 0), headers: h, body: Buffer.alloc(0), trailers: {} };
    });
    stream.on('trailers', (t) => {
      if (fieldCount(t) > b.maxHeaders) return finish(new CallError('failed', `more than ${b.maxHeaders} trailers`));
      if (answer) answer.trailers = t;
    });
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > b.maxBytes) return finish(new CallError('failed', `response larger than ${b.maxBytes} bytes`));
      chunks.push(c);
    });
    stream.on('end', () => finish());
    stream.on('close', () => finish(answer ? undefined : new CallError('failed', `stream reset (code ${stream.rstCode ?? 0})`)));
    stream.end(body);
  });
}

/** One HTTP/1.1 exchange on `conn` (closed after it). */
export function h1Exchange(conn: Duplex, o: { method: string; path: string; headers: OutgoingHttpHeaders }, body: Buffer, b: Bounds): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    let done = false;
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (e?: CallError, a?: Answer) => {
      if (done) return;
      done = true;
      unguard();
      if (e || !a) {
        req.destroy();
        conn.destroy();
        return reject(e ?? new CallError('failed', 'connection closed before a response'));
      }
      conn.destroy();
      resolve(a);
    };
    const unguard = guard(b, (e) => finish(e));
    // maxHeaderSize bounds the header block; the count is checked on arrival.
    const req = http.request({ createConnection: () => conn as unknown as Socket, method: o.method, path: o.path, headers: { ...o.headers, connection: 'close' }, maxHeaderSize: 16 * 1024 });
    req.on('error', (e) => finish(new CallError('failed', e.message)));
    req.on('response', (res) => {
      if (res.rawHeaders.length / 2 > b.maxHeaders) return finish(new CallError('failed', `more than ${b.maxHeaders} response headers`));
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > b.maxBytes) return finish(new CallError('failed', `response larger than ${b.maxBytes} bytes`));
        chunks.push(c);
      });
      res.on('error', (e) => finish(new CallError('failed', e.message)));
      res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers }));
      res.on('close', () => finish(new CallError('failed', 'connection closed mid-response')));
    });
    req.on('close', () => setImmediate(() => finish(new CallError('failed', 'connection closed before a response'))));
    req.end(body);
  });
}
