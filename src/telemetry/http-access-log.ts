// The access log of an L7 proxy: one JSON line per HTTP request when it ends (Envoy's default
// fields, named as Istio's JSON access log names them), beside the connection log (access-log.ts).
import type { AccessLogSink } from './access-log.ts';

export interface HttpRequestRecord {
  startTime: Date;
  method: string;
  /** The path with its query, as the client sent it. */
  path: string;
  protocol: string;
  authority?: string;
  responseCode: number;
  responseFlags: string;
  /** Why the proxy answered itself or the request failed. */
  details?: string;
  bytesReceived: number;
  bytesSent: number;
  durationMs: number;
  upstreamHost?: string;
  upstreamCluster?: string;
  routeName?: string;
  requestId?: string;
  userAgent?: string;
  downstreamPeer?: string;
  downstreamPrincipal?: string;
  upstreamPrincipal?: string;
  /** The original destination the tunnel was for (CONNECT authority). */
  destination?: string;
  /** A filter asked for this request to be logged (Envoy's access_log_hint: an RBAC LOG policy matched). */
  accessLogHint?: boolean;
  /** The authorization policy that refused the request (the agents' connection log has the same field). */
  policy?: string;
}

export function httpAccessLogEntry(r: HttpRequestRecord): Record<string, unknown> {
  return {
    start_time: r.startTime.toISOString(),
    method: r.method,
    path: r.path,
    protocol: r.protocol,
    authority: r.authority,
    response_code: r.responseCode,
    response_flags: r.responseFlags,
    response_code_details: r.details,
    bytes_received: r.bytesReceived,
    bytes_sent: r.bytesSent,
    duration: r.durationMs,
    upstream_host: r.upstreamHost,
    upstream_cluster: r.upstreamCluster,
    route_name: r.routeName,
    x_request_id: r.requestId,
    user_agent: r.userAgent,
    downstream_peer_address: r.downstreamPeer,
    downstream_peer_principal: r.downstreamPrincipal,
    upstream_peer_principal: r.upstreamPrincipal,
    original_destination: r.destination,
    ...(r.accessLogHint && { access_log_hint: true }),
    ...(r.policy && { policy: r.policy }),
  };
}

export function logHttpRequest(log: AccessLogSink, r: HttpRequestRecord): void {
  log.info(httpAccessLogEntry(r), 'request complete');
}
