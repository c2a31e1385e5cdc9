// Istio's HTTP request telemetry (what Envoy's stats filter reports in sidecars and waypoints), with
// Istio's names, labels and buckets, so dashboards written for Istio's waypoints work unchanged:
// istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes and
// istio_response_bytes. The labels are the TCP series' (istio-tcp.ts) plus response_code and
// grpc_response_status; `reporter` is "waypoint" for a waypoint.
//
// Recording is on every request's path, so it is array increments on a series found by the
// request's facts: prom-client would build, validate and hash the 25 labels four times per request
// (a tenth of the waypoint's CPU in the benchmark's profile). The four metrics are registered in
// the prom-client registry as metric objects of their own and formatted by it at scrape time.
import type { Registry } from 'prom-client';
import { tcpLabels, TCP_LABELS, type ConnectionFacts } from './istio-tcp.ts';
import { modelKey, SeriesCache } from './series-cache.ts';

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

/** One histogram's counts for one label set: per bucket (not cumulative; the last is +Inf), sum, count. */
class Counts {
  readonly buckets: Float64Array;
  sum = 0;
  count = 0;
  constructor(private readonly bounds: readonly number[]) {
    this.buckets = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.buckets[i]!++;
    this.sum += v;
    this.count++;
  }
}

/** One label set's series: the request count and the three histograms. */
class HttpSeries {
  requests = 0;
  readonly duration = new Counts(DURATION_BUCKETS_MS);
  readonly requestBytes = new Counts(BYTES_BUCKETS);
  readonly responseBytes = new Counts(BYTES_BUCKETS);
  constructor(readonly labels: HttpLabels) {}
}

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

/** A metric object as prom-client's registry formats it (name, help, type, get()). */
interface SeriesMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Value[] }>;
  reset(): void;
}


export class IstioHttpMetrics {
  private readonly cache = new SeriesCache<HttpLabels, HttpSeries>(HTTP_LABELS, (l) => new HttpSeries(l));

  constructor(registry: Registry) {
    const all = () => this.cache.byLabels.values();
    const metric = (name: string, help: string, get: () => Value[], type: SeriesMetric['type']): SeriesMetric => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: async () => ({ name, help, type, aggregator: 'sum', values: get() }),
      reset: () => this.cache.clear(),
    });
    const histogram = (name: string, help: string, bounds: readonly number[], pick: (s: HttpSeries) => Counts) =>
      metric(
        name,
        help,
        () => {
          const values: Value[] = [];
          for (const s of all()) {
            const c = pick(s);
            let acc = 0;
            for (let i = 0; i <= bounds.length; i++) {
              acc += c.buckets[i]!;
              values.push({ labels: { le: i < bounds.length ? bounds[i]! : '+Inf', ...s.labels }, value: acc, metricName: `${name}_bucket` });
            }
            values.push({ labels: s.labels, value: c.sum, metricName: `${name}_sum` });
            values.push({ labels: s.labels, value: c.count, metricName: `${name}_count` });
          }
          return values;
        },
        'histogram',
      );
    const metrics = [
      metric('istio_requests_total', 'Requests processed', () => [...all()].map((s) => ({ labels: s.labels, value: s.requests })), 'counter'),
      histogram('istio_request_duration_milliseconds', 'Request duration in milliseconds', DURATION_BUCKETS_MS, (s) => s.duration),
      histogram('istio_request_bytes', 'Request sizes in bytes', BYTES_BUCKETS, (s) => s.requestBytes),
      histogram('istio_response_bytes', 'Response sizes in bytes', BYTES_BUCKETS, (s) => s.responseBytes),
    ];
    // The registry's own type names a prom-client metric class; these have its shape.
    for (const m of metrics) registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series a request with these facts counts into. */
  private series(f: RequestFacts): HttpSeries {
    return this.cache.get(`${modelKey(f)}|${f.protocol}|${f.responseCode}|${f.responseFlags}|${f.grpcStatus ?? ''}`, f, () => httpLabels(f));
  }

  record(o: RequestOutcome): void {
    const s = this.series(o);
    s.requests++;
    s.duration.observe(o.durationMs);
    s.requestBytes.observe(o.requestBytes);
    s.responseBytes.observe(o.responseBytes);
  }
}
