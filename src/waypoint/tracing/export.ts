// Where a listener's spans go: one OpenTelemetry SDK pipeline (BasicTracerProvider ->
// BatchSpanProcessor -> OTLP/HTTP protobuf exporter) per distinct collector. The collector is a
// mesh service named by its cluster (`outbound|<port>||<host>`); the waypoint's own traffic is not
// captured, so each export resolves the cluster to one of its endpoints in the current routing
// table and posts there (endpoint changes are followed, the exporter for an address is replaced
// when the address changes).
//
// Memory is bounded: spans ended but not yet settled (queued, or in an export that has not
// answered) never exceed maxQueueSize; beyond it a span is dropped and counted. A dead or hanging
// collector costs at most that many spans and the exporter's timeout, never the requests.
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type Span, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { Context, Tracer } from '@opentelemetry/api';
import type { Endpoint, RoutingTable } from '../router/table.ts';
import type { ExportLimits, ExportStats, TraceConfig } from './config.ts';

const hostOf = (e: Endpoint) => (e.address.includes(':') ? `[${e.address}]` : e.address);

/** Posts to an endpoint of the collector's cluster, as the table has it at export time. */
class ClusterExporter implements SpanExporter {
  private inner?: { url: string; exporter: OTLPTraceExporter };
  private next = 0;

  constructor(
    private readonly cfg: TraceConfig,
    private readonly table: () => RoutingTable,
    private readonly settled: (n: number, ok: boolean) => void,
  ) {}

  private endpoint(): Endpoint | undefined {
    const t = this.table();
    const eds = t.clusters.get(this.cfg.cluster)?.edsName ?? this.cfg.cluster;
    const eps = t.endpoints.get(eds);
    if (!eps?.length) return undefined;
    return eps[this.next++ % eps.length];
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    const finish = (r: ExportResult) => {
      this.settled(spans.length, r.code === ExportResultCode.SUCCESS);
      done(r);
    };
    const ep = this.endpoint();
    if (!ep) return finish({ code: ExportResultCode.FAILED, error: new Error(`cluster ${this.cfg.cluster}: no endpoint`) });
    const url = `http://${hostOf(ep)}:${ep.port}${this.cfg.path}`;
    if (this.inner?.url !== url) {
      void this.inner?.exporter.shutdown();
      this.inner = { url, exporter: new OTLPTraceExporter({ url, headers: { ...this.cfg.headers }, timeoutMillis: this.cfg.timeoutMs, concurrencyLimit: 2 }) };
    }
    this.inner.exporter.export(spans, finish);
  }

  async shutdown(): Promise<void> {
    await this.inner?.exporter.shutdown();
  }

  async forceFlush(): Promise<void> {
    await this.inner?.exporter.forceFlush();
  }
}

/** Counts and bounds what the batch processor holds (its own overflow is silent). */
class BoundedProcessor implements SpanProcessor {
  private held = 0;
  constructor(
    private readonly inner: SpanProcessor,
    private readonly max: number,
    private readonly stats: ExportStats,
  ) {}

  onStart(span: Span, ctx: Context): void {
    this.inner.onStart(span, ctx);
  }

  onEnd(span: ReadableSpan): void {
    this.stats.ended++;
    if (this.held >= this.max) {
      this.stats.dropped++;
      return;
    }
    this.held++;
    this.inner.onEnd(span);
  }

  settle(n: number, ok: boolean): void {
    this.held = Math.max(0, this.held - n);
    if (ok) this.stats.exported += n;
    else this.stats.failed += n;
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}

/** One collector's pipeline. */
export class Collector {
  readonly tracer: Tracer;
  readonly stats: ExportStats = { ended: 0, exported: 0, failed: 0, dropped: 0 };
  private readonly provider: BasicTracerProvider;

  constructor(cfg: TraceConfig, serviceName: string, table: () => RoutingTable, limits: ExportLimits) {
    const settle: { to?: BoundedProcessor } = {};
    const exporter = new ClusterExporter(cfg, table, (n, ok) => settle.to?.settle(n, ok));
    const batch = new BatchSpanProcessor(exporter, {
      // Never reached: BoundedProcessor holds at most maxQueueSize.
      maxQueueSize: limits.maxQueueSize + 1,
      maxExportBatchSize: Math.min(limits.maxExportBatchSize, limits.maxQueueSize),
      scheduledDelayMillis: limits.scheduledDelayMillis,
      exportTimeoutMillis: cfg.timeoutMs,
    });
    const processor = (settle.to = new BoundedProcessor(batch, limits.maxQueueSize, this.stats));
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': cfg.serviceName || serviceName }),
      sampler: new AlwaysOnSampler(), // the waypoint decides sampling itself (Envoy's rules) before a span exists
      spanProcessors: [processor],
    });
    this.tracer = this.provider.getTracer('weft-waypoint');
  }

  flush(): Promise<void> {
    return this.provider.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}
