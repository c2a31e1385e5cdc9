// A local answer to a gRPC request, as Envoy sends one: HTTP 200, trailers-only. Over HTTP/2 that
// must be one HEADERS frame with END_STREAM: the compatibility API's writeHead() and end() send the
// status in headers and then an empty DATA frame (or trailers), which gRPC clients read as a call
// that ended without a status ("Call ended without gRPC status", INTERNAL).
import type { ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';

/** gRPC's percent-encoding of grpc-message: only '%' and what is not printable ASCII. */
export const grpcMessage = (s: string) => s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));

/** Sends the trailers-only answer; `headers` carries grpc-status and grpc-message already. */
export function sendTrailersOnly(res: ServerResponse | Http2ServerResponse, headers: Record<string, string | number>): void {
  const stream = (res as Http2ServerResponse).stream as Http2ServerResponse['stream'] | undefined;
  if (stream) {
    if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 200, ...headers }, { endStream: true });
  } else res.writeHead(200, headers).end(); // HTTP/1.1: headers then an empty body, what a gRPC-over-HTTP/1 bridge reads
}
