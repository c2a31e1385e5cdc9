// The access log exported over OTLP logs (HTTP/protobuf), next to the line on stdout: one LogRecord
// per line, its fields as attributes, the line's message as body. Built on the OpenTelemetry SDK's
// LoggerProvider and BatchLogRecordProcessor; what weft adds is that a collector can never hurt
// the proxy: emit() is a counter check and an array push (batches are sent later, one at a time),
// records held (queued or being sent) are capped and the rest dropped and counted, every export
// ends by its deadline whatever the collector does, and shutdown flushes within a deadline.
// Loaded with import() only when an endpoint is configured: the SDK costs heap nobody else pays.
import { SeverityNumber } from '@opentelemetry/api-logs';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider, type LogRecordExporter, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { Logger } from '@opentelemetry/api-logs';
import type { AccessLogSink } from './access-log.ts';

export interface OtlpLogsOptions {
  /** The collector's logs URL, used as given (OTLP/HTTP: usually http://<collector>:4318/v1/logs). */
  endpoint: string;
  /** Sent with every export (e.g. authorization for a hosted backend). */
  headers?: Record<string, string>;
  /** One export's deadline, retries included. */
  timeoutMs?: number;
  /** Records held at most, queued or being sent: past it new records are dropped (and counted). */
  maxQueue?: number;
  /** Records per export request. */
  maxBatch?: number;
  /** How long a record may wait for a batch to fill. */
  delayMs?: number;
  /** Resource attributes: service.name, k8s.node.name... */
  resource: Record<string, string>;
  /** Instrumentation scope of the records. */
  scope?: string;
  /** Told about failed exports (the caller rate-limits its own logging). */
  onExportError?: (error: Error, records: number) => void;
}

export const OTLP_LOGS_DEFAULTS = { timeoutMs: 5_000, maxQueue: 2_048, maxBatch: 512, delayMs: 1_000 } as const;

/** What happened to the records so far: exported + dropped + held = emitted. */
export interface OtlpLogsStats {
  exported: number;
  /** queue_full: refused at emit (the cap was reached); export_failed: the collector refused, failed or timed out. */
  dropped: { queue_full: number; export_failed: number };
  /** Queued or being sent now. */
  held: number;
}

/** OTLP/HTTP's path for logs: a signal-specific endpoint is used as given, so a bare host:port posts elsewhere. */
export const OTLP_LOGS_PATH = '/v1/logs';

/** Parses OTLP's header list form (OTEL_EXPORTER_OTLP_HEADERS): `k1=v1,k2=v2`, values percent-encoded. */
export function parseOtlpHeaders(list: string, into: Record<string, string> = {}): Record<string, string> {
  for (const part of list.split(',')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    const name = (eq < 0 ? '' : part.slice(0, eq)).trim();
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw new Error(`OTLP header ${JSON.stringify(part.trim())}: expected name=value`);
    into[name] = decodeURIComponent(part.slice(eq + 1).trim());
  }
  return into;
}

/** The line's fields as LogRecord attributes: absent values left out (OTLP has no undefined). */
function attributes(entry: Record<string, unknown>): Record<string, string | number | boolean | string[]> {
  const out: Record<string, string | number | boolean | string[]> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (v === undefined || v === null) continue;
    out[k] = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : Array.isArray(v) ? v.map(String) : String(v);
  }
  return out;
}

/**
 * An access-log sink (the line's info/warn) that exports each record over OTLP. Records past the
 * cap are dropped before the SDK sees them; the exporter below settles every batch by its
 * deadline, so the count of held records always comes back down.
 */
export class OtlpAccessLogExporter implements AccessLogSink {
  private readonly provider: LoggerProvider;
  private readonly logger: Logger;
  private readonly maxQueue: number;
  private readonly counts: OtlpLogsStats = { exported: 0, dropped: { queue_full: 0, export_failed: 0 }, held: 0 };
  private stopped = false;

  constructor(o: OtlpLogsOptions) {
    const url = new URL(o.endpoint); // throws on a malformed endpoint, at start
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`OTLP logs endpoint ${o.endpoint}: http or https`);
    const timeoutMs = o.timeoutMs ?? OTLP_LOGS_DEFAULTS.timeoutMs;
    this.maxQueue = o.maxQueue ?? OTLP_LOGS_DEFAULTS.maxQueue;
    const otlp = new OTLPLogExporter({
      url: o.endpoint,
      headers: o.headers ?? {},
      timeoutMillis: timeoutMs,
      // One batch in flight (the processor's way); a second only while an abandoned one winds down.
      concurrencyLimit: 2,
    });
    const exporter = new SettlingExporter(otlp, timeoutMs, (n, result) => {
      this.counts.held -= n;
      if (result.code === ExportResultCode.SUCCESS) this.counts.exported += n;
      else {
        this.counts.dropped.export_failed += n;
        o.onExportError?.(result.error ?? new Error('export failed'), n);
      }
    });
    const processor = new BatchLogRecordProcessor({
      exporter,
      // The cap is enforced in emit() (held <= maxQueue), so the processor never drops unseen.
      maxQueueSize: this.maxQueue,
      maxExportBatchSize: Math.min(o.maxBatch ?? OTLP_LOGS_DEFAULTS.maxBatch, this.maxQueue),
      scheduledDelayMillis: o.delayMs ?? OTLP_LOGS_DEFAULTS.delayMs,
      // Past the settling exporter's own deadline: it always answers first.
      exportTimeoutMillis: timeoutMs + SETTLE_GRACE_MS * 2,
    });
    this.provider = new LoggerProvider({ resource: defaultResource().merge(resourceFromAttributes(o.resource)), processors: [processor] });
    this.logger = this.provider.getLogger(o.scope ?? 'weft.access_log');
  }

  info(entry: object, msg: string): void {
    this.emit(entry, msg, SeverityNumber.INFO, 'INFO');
  }

  warn(entry: object, msg: string): void {
    this.emit(entry, msg, SeverityNumber.WARN, 'WARN');
  }

  private emit(entry: object, body: string, severityNumber: SeverityNumber, severityText: string): void {
    if (this.stopped) return;
    if (this.counts.held >= this.maxQueue) {
      this.counts.dropped.queue_full++;
      return;
    }
    this.counts.held++;
    try {
      this.logger.emit({ severityNumber, severityText, body, attributes: attributes(entry as Record<string, unknown>) });
    } catch {
      // Never the connection's problem: the record is lost, and counted.
      this.counts.held--;
      this.counts.dropped.export_failed++;
    }
  }

  stats(): OtlpLogsStats {
    return { ...this.counts, dropped: { ...this.counts.dropped } };
  }

  /** Sends what is queued and stops; gives up at the deadline (what is left is lost). */
  async shutdown(deadlineMs = 3_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)));
    try {
      await Promise.race([this.provider.shutdown().catch(() => {}), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Margin past the OTLP exporter's own timeout before a batch is given up on here. */
const SETTLE_GRACE_MS = 1_000;

/**
 * Wraps the OTLP exporter so every batch settles exactly once and by a deadline: the exporter's
 * own timeout should end it, and this one does if anything (a hung socket, a lost callback) does not.
 */
class SettlingExporter implements LogRecordExporter {
  constructor(
    private readonly inner: LogRecordExporter,
    private readonly timeoutMs: number,
    private readonly settled: (records: number, result: ExportResult) => void,
  ) {}

  export(logs: ReadableLogRecord[], done: (result: ExportResult) => void): void {
    let open = true;
    const settle = (result: ExportResult) => {
      if (!open) return;
      open = false;
      clearTimeout(timer);
      this.settled(logs.length, result);
      done(result);
    };
    const timer = setTimeout(() => settle({ code: ExportResultCode.FAILED, error: new Error(`OTLP logs export not done in ${this.timeoutMs + SETTLE_GRACE_MS} ms`) }), this.timeoutMs + SETTLE_GRACE_MS);
    timer.unref();
    try {
      this.inner.export(logs, settle);
    } catch (e) {
      settle({ code: ExportResultCode.FAILED, error: e as Error });
    }
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }
}
