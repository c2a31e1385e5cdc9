// One span per request at the waypoint, as Envoy's OpenTelemetry tracer makes it in an ambient
// waypoint:
// - the caller's context: W3C traceparent/tracestate, else B3 (single `b3` or multi x-b3-*);
// - sampling: a context that carries a decision is followed (traceparent's sampled flag, B3's
//   sampled or debug flag); without one (no context, or B3 with the decision deferred) the
//   listener's random_sampling percentage decides;
// - a SERVER span named as Istio's route decorator names it (`<host>:<port>/*`), with Envoy's
//   standard tags and Istio's, ended with the response;
// - the upstream request carries the waypoint's span as the parent: traceparent always (sampled
//   flag as decided, tracestate passed on), and B3 in the caller's encoding if the caller used B3.
// An unsampled request only gets new ids propagated: no SDK span, no tags, nothing exported.
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, defaultTextMapGetter, trace, type SpanContext } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { B3Propagator } from '@opentelemetry/propagator-b3';
import type { RoutingTable } from '../router/table.ts';
import type { ListenerTelemetry, TraceConfig } from './config.ts';
import type { Collector } from './export.ts';
import { collectorKey, DEFAULT_EXPORT_LIMITS, type ExportLimits, type ExportStats } from './config.ts';

/** Who the waypoint is, for Istio's span tags and the resource's service.name. */
export interface TracingNode {
  nodeId: string;
  namespace: string;
  /** The waypoint's canonical service (its Gateway's name). */
  canonicalService: string;
  canonicalRevision: string;
  meshId: string;
  clusterId: string;
}

export interface TracingOptions {
  node: TracingNode;
  /** Sampling draws from it (tests fix it). */
  random?: () => number;
  limits?: Partial<ExportLimits>;
}

/** What a request's span starts from. Header names are lower case; headers are changed in place (propagation). */
export interface SpanStart {
  headers: IncomingHttpHeaders;
  /** The listener (`host:port`) or the destination addressed. */
  target: string;
  method: string;
  scheme: string;
  host: string;
  url: string;
  protocol: string;
  peerIp: string;
  requestId: string;
  startTime: Date;
}

/** The facts the span ends with (the access log's). */
export interface SpanEnd {
  responseCode: number;
  responseFlags: string;
  bytesReceived: number;
  bytesSent: number;
  upstreamCluster?: string;
  upstreamHost?: string;
}

export interface RequestSpan {
  readonly sampled: boolean;
  readonly traceId: string;
  readonly spanId: string;
  end(r: SpanEnd): void;
}

const w3c = new W3CTraceContextPropagator();
const b3 = new B3Propagator();

type Format = 'w3c' | 'b3-single' | 'b3-multi';
interface Parent {
  sc: SpanContext;
  format: Format;
  /** Whether the context says sampled or not (B3 may defer the decision). */
  decided: boolean;
}

const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);

/** The caller's context, if a valid one came. */
export function extractParent(h: IncomingHttpHeaders): Parent | undefined {
  if (h.traceparent !== undefined) {
    const sc = trace.getSpanContext(w3c.extract(ROOT_CONTEXT, h, defaultTextMapGetter));
    if (sc && trace.isSpanContextValid(sc)) return { sc, format: 'w3c', decided: true };
  }
  const single = first(h.b3);
  if (single !== undefined || h['x-b3-traceid'] !== undefined) {
    const sc = trace.getSpanContext(b3.extract(ROOT_CONTEXT, h, defaultTextMapGetter));
    if (!sc || !trace.isSpanContextValid(sc)) return undefined;
    if (single !== undefined) return { sc, format: 'b3-single', decided: single.split('-').length >= 3 };
    const decided = h['x-b3-sampled'] !== undefined || first(h['x-b3-flags']) === '1';
    return { sc, format: 'b3-multi', decided };
  }
  return undefined;
}

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

/** Writes the waypoint's span as the parent of the upstream request. */
function inject(h: IncomingHttpHeaders, traceId: string, spanId: string, sampled: boolean, parent: Parent | undefined): void {
  h.traceparent = `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
  if (parent?.format === 'b3-multi') {
    h['x-b3-traceid'] = traceId;
    h['x-b3-spanid'] = spanId;
    h['x-b3-parentspanid'] = parent.sc.spanId;
    h['x-b3-sampled'] = sampled ? '1' : '0';
    delete h['x-b3-flags'];
  } else if (parent?.format === 'b3-single') {
    h.b3 = `${traceId}-${spanId}-${sampled ? '1' : '0'}-${parent.sc.spanId}`;
  }
}

const UNSAMPLED_END = () => {};

export class WaypointTracing {
  private readonly collectors = new Map<string, Collector>();
  /**
   * The SDK and OTLP exporter (export.ts), loaded when a listener first has tracing: about 8 MB of
   * code and heap a waypoint without a Telemetry tracing provider never pays for.
   */
  private exporter?: typeof import('./export.ts');
  private loading?: Promise<void>;
  private readonly limits: ExportLimits;
  private readonly random: () => number;
  private readonly serviceName: string;

  constructor(
    private readonly table: () => RoutingTable,
    private readonly o: TracingOptions,
  ) {
    this.limits = { ...DEFAULT_EXPORT_LIMITS, ...o.limits };
    this.random = o.random ?? Math.random;
    this.serviceName = `${o.node.canonicalService}.${o.node.namespace}`;
  }

  /** The telemetry of what a tunnel addressed: its port's listener, or the waypoint's own for a workload. */
  static of(table: RoutingTable, listener: string | undefined): ListenerTelemetry | undefined {
    return listener === undefined ? table.ownTelemetry : table.telemetry?.get(listener);
  }

  /** The table the collectors were last checked against. */
  private checked?: RoutingTable;
  /** Lost counts of collectors no listener names any more (their last spans flushed first). */
  private retired: ExportStats = { ended: 0, exported: 0, failed: 0, dropped: 0 };

  /** Shuts the collectors no listener of the table names (a Telemetry removed or its provider changed). */
  private prune(table: RoutingTable): void {
    const used = new Set<string>();
    for (const t of [table.ownTelemetry, ...(table.telemetry?.values() ?? [])]) if (t?.tracing) used.add(collectorKey(t.tracing));
    for (const [key, c] of this.collectors) {
      if (used.has(key)) continue;
      this.collectors.delete(key);
      void c.shutdown().catch(() => {}).finally(() => {
        for (const k of Object.keys(this.retired) as (keyof ExportStats)[]) this.retired[k] += c.stats[k];
      });
    }
  }

  /** Whether start() can run now; else await load() first (once per process). */
  get loaded(): boolean {
    return this.exporter !== undefined;
  }

  load(): Promise<void> {
    return (this.loading ??= import('./export.ts').then((m) => void (this.exporter = m)));
  }

  private collector(cfg: TraceConfig): Collector {
    const table = this.table();
    if (table !== this.checked) {
      this.checked = table;
      this.prune(table);
    }
    const key = collectorKey(cfg);
    let c = this.collectors.get(key);
    if (!this.exporter) throw new Error('tracing: start() before load()');
    if (!c) this.collectors.set(key, (c = new this.exporter.Collector(cfg, this.serviceName, this.table, this.limits)));
    return c;
  }

  /** Starts the request's span (or only its ids, unsampled) and propagates it into the headers. */
  start(cfg: TraceConfig, s: SpanStart): RequestSpan {
    const parent = extractParent(s.headers);
    const sampled = parent?.decided ? (parent.sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED : this.random() * 100 < cfg.samplingPercent;
    if (!sampled) {
      const traceId = parent?.sc.traceId ?? hex(16);
      const spanId = hex(8);
      inject(s.headers, traceId, spanId, false, parent);
      return { sampled, traceId, spanId, end: UNSAMPLED_END };
    }
    const node = this.o.node;
    const attributes: Record<string, string> = {
      component: 'proxy',
      node_id: node.nodeId,
      'guid:x-request-id': s.requestId,
      'http.url': `${s.scheme}://${s.host}${s.url}`.slice(0, cfg.maxPathTagLength),
      'http.method': s.method,
      'http.protocol': s.protocol,
      downstream_cluster: first(s.headers['x-envoy-downstream-service-cluster']) ?? '-',
      user_agent: first(s.headers['user-agent']) ?? '-',
      'peer.address': s.peerIp,
      'istio.canonical_service': node.canonicalService,
      'istio.canonical_revision': node.canonicalRevision,
      'istio.mesh_id': node.meshId,
      'istio.namespace': node.namespace,
      'istio.cluster_id': node.clusterId,
    };
    for (const t of cfg.customTags) {
      if ('literal' in t) attributes[t.tag] = t.literal;
      else if ('environment' in t) attributes[t.tag] = process.env[t.environment] ?? t.defaultValue ?? '';
      else {
        const v = first(s.headers[t.header]) ?? t.defaultValue;
        if (v !== undefined) attributes[t.tag] = v;
      }
    }
    const ctx = parent ? trace.setSpanContext(ROOT_CONTEXT, { ...parent.sc, traceFlags: TraceFlags.SAMPLED }) : ROOT_CONTEXT;
    const span = this.collector(cfg).tracer.startSpan(`${s.target}/*`, { kind: SpanKind.SERVER, startTime: s.startTime, attributes }, ctx);
    const { traceId, spanId } = span.spanContext();
    inject(s.headers, traceId, spanId, true, parent);
    return {
      sampled,
      traceId,
      spanId,
      end: (r) => {
        const error = r.responseCode >= 500 || r.responseCode === 0;
        span.setAttributes({
          'http.status_code': String(r.responseCode),
          response_flags: r.responseFlags,
          request_size: String(r.bytesReceived),
          response_size: String(r.bytesSent),
          upstream_cluster: r.upstreamCluster || '-',
          'upstream_cluster.name': r.upstreamCluster || '-',
          ...(r.upstreamHost && { upstream_address: r.upstreamHost }),
          ...(error && { error: 'true' }),
        });
        if (error) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      },
    };
  }

  /** Every collector's counts, summed. */
  stats(): ExportStats {
    const s: ExportStats = { ...this.retired };
    for (const c of this.collectors.values()) for (const k of Object.keys(s) as (keyof ExportStats)[]) s[k] += c.stats[k];
    return s;
  }

  /** Exports what is queued now (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.collectors.values()].map((c) => c.flush()));
  }

  async shutdown(): Promise<void> {
    const all = [...this.collectors.values()];
    this.collectors.clear();
    await Promise.all(all.map((c) => c.shutdown().catch(() => {})));
  }
}
