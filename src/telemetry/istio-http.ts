// Istio's HTTP request telemetry (what Envoy's stats filter reports in sidecars and waypoints), with
// Istio's names, labels and buckets, so dashboards written for Istio's waypoints work unchanged:
// istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes and
// istio_response_bytes. The labels are the TCP series' (istio-tcp.ts) plus response_code and
// grpc_response_status; `reporter` is "waypoint" for a waypoint.
import { Counter, Histogram, type Registry } from 'prom-client';
import { tcpLabels, TCP_LABELS, type ConnectionFacts } from './istio-tcp.ts';

export const HTTP_LABELS = [...TCP_LABELS, 'response_code', 'grpc_response_status'] as const;
export type HttpLabelName = (typeof HTTP_LABELS)[number];
export type HttpLabels = Record<HttpLabelName, string>;

/** Istio's default duration buckets (ms). */
export const DURATION_BUCKETS_MS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];
/** Istio's default size buckets (bytes): 1 to 10^9, by tens. */
export const BYTES_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

export interface RequestFacts extends Omit<ConnectionFacts, 'reporter'> {
  reporter: 'source' | 'destination' | 'waypoint';
  /** "http", "http2" or "grpc", as Istio's request_protocol. */
  protocol: 'http' | 'http2' | 'grpc';
  /** 0 when no response was sent (Istio writes 0 too). */
  responseCode: number;
  /** Envoy's response flags, "-" for none. */
  responseFlags: string;
  grpcStatus?: number;
}

export function httpLabels(f: RequestFacts): HttpLabels {
  const base = tcpLabels({ ...f, reporter: 'destination' }, f.responseFlags);
  return {
    ...base,
    reporter: f.reporter,
    request_protocol: f.protocol,
    response_code: String(f.responseCode),
    grpc_response_status: f.grpcStatus === undefined ? '' : String(f.grpcStatus),
  };
}

/** One request as the series count it: sizes are the whole bodies plus headers, as Envoy counts them. */
export interface RequestOutcome extends RequestFacts {
  durationMs: number;
  requestBytes: number;
  responseBytes: number;
}

export class IstioHttpMetrics {
  readonly requests: Counter<HttpLabelName>;
  readonly duration: Histogram<HttpLabelName>;
  readonly requestBytes: Histogram<HttpLabelName>;
  readonly responseBytes: Histogram<HttpLabelName>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Counter({ name: 'istio_requests_total', help: 'Requests processed', labelNames: HTTP_LABELS, registers });
    this.duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames: HTTP_LABELS, buckets: DURATION_BUCKETS_MS, registers });
    this.requestBytes = new Histogram({ name: 'istio_request_bytes', help: 'Request sizes in bytes', labelNames: HTTP_LABELS, buckets: BYTES_BUCKETS, registers });
    this.responseBytes = new Histogram({ name: 'istio_response_bytes', help: 'Response sizes in bytes', labelNames: HTTP_LABELS, buckets: BYTES_BUCKETS, registers });
  }

  record(o: RequestOutcome): void {
    const labels = httpLabels(o);
    this.requests.inc(labels);
    this.duration.observe(labels, o.durationMs);
    this.requestBytes.observe(labels, o.requestBytes);
    this.responseBytes.observe(labels, o.responseBytes);
  }
}
