// One request, once it ends: into Istio's HTTP series (reporter="waypoint") and one access-log line,
// from the same facts, on every exit path (forwarded, answered locally, refused as malformed).
import type { Workload, Service } from '../../api/mesh.ts';
import type { AccessLogSink } from '../../telemetry/access-log.ts';
import { logHttpRequest, type HttpRequestRecord } from '../../telemetry/http-access-log.ts';
import type { IstioHttpMetrics } from '../../telemetry/istio-http.ts';

export interface RequestRecord extends HttpRequestRecord {
  src?: Workload;
  dst?: Workload;
  service?: Service;
  grpc: boolean;
  grpcStatus?: number;
}

export class RequestTelemetry {
  constructor(
    private readonly metrics: IstioHttpMetrics,
    private readonly log?: AccessLogSink,
  ) {}

  /** `log` false: the listener's access logging is off (Telemetry); the metrics are kept. */
  record(r: RequestRecord, log = true): void {
    this.metrics.record({
      reporter: 'waypoint',
      src: r.src,
      srcPrincipal: r.downstreamPrincipal,
      dst: r.dst,
      dstPrincipal: r.upstreamPrincipal,
      service: r.service,
      mtls: true,
      protocol: r.grpc ? 'grpc' : 'http',
      responseCode: r.responseCode,
      responseFlags: r.responseFlags,
      grpcStatus: r.grpcStatus,
      durationMs: r.durationMs,
      requestBytes: r.bytesReceived,
      responseBytes: r.bytesSent,
    });
    if (this.log && log) logHttpRequest(this.log, r);
  }
}
