// One forward attempt to an HTTP/2 upstream (a cluster with explicit http2_protocol_options: http2,
// grpc and grpc-web ports) on a pooled session (h2-sessions.ts): the request as an HTTP/2 stream,
// its body streamed with backpressure, the client's trailers sent after it, the response and its
// trailers (grpc-status, grpc-message) handed back, whichever HTTP version the client speaks.
// Failures map to response flags as Envoy's: UC (the session went before a response: 503), UR
// (the upstream reset the stream, before a response: 503, or mid-response; `reset` says which kind
// came before a response, `refused` when the upstream never processed it), UT (route timeout:
// 504), DC (the client went away). Exchange.accept may drop the response before
// anything reaches the client (the stream is cancelled), for retry.ts, which runs its attempts
// over h2Transport.
import http2, { type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { endToEnd, type Exchange, type ForwardResult } from './forward.ts';
import type { H2Sessions } from './h2-sessions.ts';
import type { Transport } from './retry.ts';

/** What an HTTP/2 exchange adds: trailers both ways. */
export interface H2Exchange extends Exchange {
  /** The client's request trailers, once its body has ended (HTTP/2 clients; none for HTTP/1.1). */
  requestTrailers(): IncomingHttpHeaders | undefined;
  /** Called once with the upstream's trailers, before the body sink ends. */
  respondTrailers(trailers: OutgoingHttpHeaders): void;
  /** The `:authority` to send (the client's Host). */
  authority: string;
  /**
   * The client speaks HTTP/2: a gRPC trailers-only response (grpc-status in a HEADERS frame that
   * ends the stream) goes to it as headers and then trailers, since the response API cannot end
   * the stream on its headers, and a gRPC client reads the status only at the end of the stream.
   */
  splitTrailersOnly?: boolean;
  /** The client's TE header: `trailers` there is passed on (the one TE value HTTP/2 allows; gRPC servers may insist on it). */
  te?: string;
}

const grpcStatusOf = (h: IncomingHttpHeaders): number | undefined => {
  const v = h['grpc-status'];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isInteger(n) ? n : undefined;
};

export function forwardH2(session: ClientHttp2Session, x: H2Exchange, timeoutMs: number): Promise<ForwardResult> {
  return new Promise((resolve) => {
    let requestBytes = 0;
    let responseBytes = 0;
    let done = false;
    let responded = false;
    let timer: NodeJS.Timeout | undefined;
    let grpcStatus: number | undefined;
    const headers: OutgoingHttpHeaders = { ...x.headers, ':method': x.method, ':path': x.url, ':scheme': 'http', ':authority': x.authority };
    delete headers.host;
    if (x.te && /\btrailers\b/i.test(x.te)) headers.te = 'trailers';
    let stream: http2.ClientHttp2Stream;
    const finish = (status: number, flags: string, details?: string, more?: { discarded?: true; reset?: ForwardResult['reset'] }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      resolve({ status, flags, details, requestBytes, responseBytes, grpcStatus, ...more });
    };
    try {
      stream = session.request(headers, { endStream: false, waitForTrailers: true });
    } catch (e) {
      // The session was closing (GOAWAY) or gone: the stream never went out.
      return finish(503, 'UC', `upstream: ${(e as Error).message}`, { reset: 'refused' });
    }
    stream.on('wantTrailers', () => {
      const t = x.requestTrailers();
      const out: OutgoingHttpHeaders = t ? endToEnd(t) : {};
      // An empty block goes out as an empty DATA frame with END_STREAM (Node's choice): no trailers.
      stream.sendTrailers(out);
    });
    const failed = (why: string) => {
      if (done) return;
      if (!responded && !x.headersSent()) {
        // REFUSED_STREAM: sent by the upstream, or nghttp2's code for a stream past a GOAWAY's last
        // stream id. Any other code on a live session: the upstream's RST_STREAM (Envoy: remote
        // reset, UR). A session that went takes its streams along (connection termination, UC).
        const code = stream.rstCode ?? 0;
        if (code === http2.constants.NGHTTP2_REFUSED_STREAM) return finish(503, 'UR', `upstream refused the stream: ${why}`, { reset: 'refused' });
        if (code !== 0 && !session.destroyed) return finish(503, 'UR', `upstream reset the stream: ${why}`, { reset: 'remote' });
        return finish(503, 'UC', `upstream: ${why}`);
      }
      x.sink.destroy(); // mid-response: the client sees the reset
      finish(responded ? 200 : 503, 'UR', `upstream reset mid-response: ${why}`);
    };
    stream.on('error', (e) => failed(e.message));
    // Its session went (the tunnel was reset): Node ends such a stream's readable with no error
    // and rstCode 0, 'aborted' is the one sign.
    stream.once('aborted', () => failed('stream aborted (its session or tunnel closed)'));
    stream.once('close', () => {
      if (!done && !stream.readableEnded) failed(`stream closed (${stream.rstCode ?? 0})`);
    });
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        if (!x.headersSent()) finish(504, 'UT', `route timeout ${timeoutMs} ms`);
        else {
          x.sink.destroy();
          finish(200, 'UT', `route timeout ${timeoutMs} ms mid-response`);
        }
      }, timeoutMs);
    }
    void x.gone.then(() => finish(0, 'DC', 'downstream went away'));
    x.body.on('data', (c: Buffer) => (requestBytes += c.length));
    x.body.pipe(stream);
    stream.once('response', (h) => {
      responded = true;
      const status = Number(h[':status'] ?? 502);
      grpcStatus = grpcStatusOf(h);
      if (x.accept && !x.accept(status, h)) return finish(status, '-', 'response discarded for a retry', { discarded: true });
      const out = endToEnd(h);
      const moved: OutgoingHttpHeaders = {};
      // grpc-status in the headers is a trailers-only response (gRPC sends it nowhere else): its
      // metadata is trailing metadata, so all of it but the content type moves to the trailers.
      if (x.splitTrailersOnly && grpcStatus !== undefined) {
        for (const k of Object.keys(out)) {
          if (k === 'content-type') continue;
          moved[k] = out[k];
          delete out[k];
        }
      }
      x.respond(status, out);
      if (Object.keys(moved).length) x.respondTrailers(moved);
      stream.on('data', (c: Buffer) => (responseBytes += c.length));
      stream.once('trailers', (t) => {
        grpcStatus = grpcStatusOf(t) ?? grpcStatus;
        x.respondTrailers(endToEnd(t));
      });
      stream.pipe(x.sink as NodeJS.WritableStream);
      stream.once('end', () => {
        const sink = x.sink as unknown as { once(e: string, f: () => void): void };
        if (x.sink.writableFinished) finish(status, '-');
        else sink.once('finish', () => finish(status, '-'));
      });
    });
  });
}

/** Attempts for retry.ts as streams on the endpoints' pooled sessions (a session made after the route deadline stays pooled). */
export function h2Transport(pool: H2Sessions): Transport<H2Exchange> {
  return {
    connect: async (target) => {
      const session = await pool.get(target.endpoint, target.identity);
      return { send: (x, timeoutMs) => forwardH2(session, x, timeoutMs), abandon: () => {} };
    },
  };
}
