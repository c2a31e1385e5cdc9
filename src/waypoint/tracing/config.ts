// An HttpConnectionManager's tracing and access_log (what the Telemetry API became at the control
// plane) -> what the waypoint does per request on that listener. Only Envoy's OpenTelemetry tracer
// exporting over OTLP/HTTP is served; anything else in the tracing config would change what is
// traced or where spans go, so it refuses the Listener (a NACK naming the field).
import type { Msg } from '../xds/envoy.ts';
import { decodeEnvoy } from '../xds/envoy.ts';

export const OTEL_TRACER = 'envoy.tracers.opentelemetry';
const OTEL_CONFIG = 'envoy.config.trace.v3.OpenTelemetryConfig';
const FILE_ACCESS_LOG = 'envoy.extensions.access_loggers.file.v3.FileAccessLog';
/** Envoy's default max_path_tag_length. */
export const DEFAULT_MAX_PATH_TAG = 256;

export type CustomTag =
  | { tag: string; literal: string }
  | { tag: string; environment: string; defaultValue?: string }
  | { tag: string; header: string; defaultValue?: string };

/** Where and how spans of a listener are exported, and which requests are sampled. */
export interface TraceConfig {
  /** The collector's cluster (`outbound|<port>||<host>`), resolved to an endpoint per export. */
  cluster: string;
  /** The path part of http_uri.uri (the host is the cluster's). */
  path: string;
  timeoutMs: number;
  headers: Readonly<Record<string, string>>;
  /** OpenTelemetryConfig.service_name; empty: the waypoint's own. */
  serviceName: string;
  /** random_sampling, in percent (Envoy's default 100). */
  samplingPercent: number;
  customTags: readonly CustomTag[];
  maxPathTagLength: number;
}

/** The telemetry of one listener (either part may be unset: the waypoint's own listener's applies). */
export interface ListenerTelemetry {
  tracing?: TraceConfig;
  /** false: requests on the listener are not access-logged; undefined: the default (logged). */
  accessLog?: boolean;
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const typeName = (any: Msg) => {
  const url = str(any.typeUrl) ?? str(any.type_url) ?? '';
  return url.slice(url.lastIndexOf('/') + 1);
};

function decodeAny(any: Msg | undefined, type: string, field: string): Msg {
  if (!any || typeName(any) !== type) throw new Error(`${field}: expected a ${type.split('.').pop()}, got ${any ? typeName(any) || 'an empty type' : 'nothing'}`);
  try {
    return decodeEnvoy(type, (any.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${field}: ${type.split('.').pop()} does not decode: ${(e as Error).message}`, { cause: e });
  }
}

const percent = (v: unknown, field: string, dflt: number): number => {
  const p = obj(v);
  if (!p) return dflt;
  const n = typeof p.value === 'number' ? p.value : 0; // 0 is left out on the wire
  if (!Number.isFinite(n) || n < 0 || n > 100) throw new Error(`${field}: ${n} is not a percentage`);
  return n;
};

const durationMs = (d: unknown): number => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : 0;
};

function customTag(t: Msg, field: string): CustomTag {
  const tag = str(t.tag);
  if (!tag) throw new Error(`${field}.tag: empty`);
  const dflt = (m: Msg) => (str(m.defaultValue) ? { defaultValue: str(m.defaultValue)! } : {});
  if (obj(t.literal)) return { tag, literal: str(obj(t.literal)!.value) ?? '' };
  if (obj(t.environment) && str(obj(t.environment)!.name)) return { tag, environment: str(obj(t.environment)!.name)!, ...dflt(obj(t.environment)!) };
  if (obj(t.requestHeader) && str(obj(t.requestHeader)!.name)) return { tag, header: str(obj(t.requestHeader)!.name)!.toLowerCase(), ...dflt(obj(t.requestHeader)!) };
  throw new Error(`${field}: only literal, environment and request_header custom tags are supported by the waypoint`);
}

const TRACING_FIELDS = new Set(['provider', 'randomSampling', 'clientSampling', 'overallSampling', 'customTags', 'maxPathTagLength', 'verbose']);

/** HCM.tracing -> TraceConfig. */
export function compileTracing(t: Msg, field: string): TraceConfig {
  for (const k of Object.keys(t)) if (!TRACING_FIELDS.has(k)) throw new Error(`${field}.${k}: not supported by the waypoint`);
  // x-client-trace-id and overall sampling are not implemented: only their "everything" default is.
  for (const k of ['clientSampling', 'overallSampling'] as const) if (percent(t[k], `${field}.${k}`, 100) !== 100) throw new Error(`${field}.${k}: only 100 % is supported by the waypoint`);
  const provider = obj(t.provider);
  if (!provider || str(provider.name) !== OTEL_TRACER) throw new Error(`${field}.provider: ${str(provider?.name) || 'none'}; the waypoint serves ${OTEL_TRACER} only`);
  const otel = decodeAny(obj(provider.typedConfig), OTEL_CONFIG, `${field}.provider.typed_config`);
  for (const k of Object.keys(otel)) if (k !== 'httpService' && k !== 'serviceName' && k !== 'otlpExporter') throw new Error(`${field}.provider.typed_config.${k}: not supported by the waypoint`);
  const http = obj(otel.httpService);
  if (!http) throw new Error(`${field}.provider.typed_config: the waypoint exports over http_service only (grpc_service is not supported)`);
  const uri = obj(http.httpUri);
  const cluster = str(uri?.cluster);
  if (!uri || !cluster) throw new Error(`${field}.provider.typed_config.http_service.http_uri.cluster: empty (the collector is reached through its cluster)`);
  const u = str(uri.uri) ?? '';
  const slash = u.replace(/^https?:\/\//, '').indexOf('/');
  const path = slash < 0 ? '/' : u.replace(/^https?:\/\//, '').slice(slash);
  const headers: Record<string, string> = {};
  for (const [i, h] of (Array.isArray(http.requestHeadersToAdd) ? (http.requestHeadersToAdd as Msg[]) : []).entries()) {
    const hv = obj(h.header);
    const key = str(hv?.key)?.toLowerCase();
    if (!key) throw new Error(`${field}.provider.typed_config.http_service.request_headers_to_add[${i}].header.key: empty`);
    headers[key] = str(hv!.value) ?? '';
  }
  const max = obj(t.maxPathTagLength);
  return {
    cluster,
    path,
    timeoutMs: durationMs(uri.timeout) || 10_000,
    headers,
    serviceName: str(otel.serviceName) ?? '',
    samplingPercent: percent(t.randomSampling, `${field}.random_sampling`, 100),
    customTags: (Array.isArray(t.customTags) ? (t.customTags as Msg[]) : []).map((c, i) => customTag(c, `${field}.custom_tags[${i}]`)),
    maxPathTagLength: max ? Number(max.value ?? 0) : DEFAULT_MAX_PATH_TAG,
  };
}

/**
 * HCM.access_log -> on or off. The control plane writes Envoy's file access logger: to /dev/null
 * means off (the waypoint logs by default); any other path is the waypoint's own log.
 */
export function compileAccessLog(logs: Msg[], field: string): boolean {
  let on = false;
  logs.forEach((l, i) => {
    const f = `${field}[${i}]`;
    if (l.filter !== undefined) throw new Error(`${f}.filter: not supported by the waypoint`);
    const c = decodeAny(obj(l.typedConfig), FILE_ACCESS_LOG, `${f}.typed_config`);
    if (str(c.path) !== '/dev/null') on = true;
  });
  return on;
}

/** The telemetry an HttpConnectionManager carries, if any. */
export function compileListenerTelemetry(hcm: Msg, field: string): ListenerTelemetry | undefined {
  const tracing = obj(hcm.tracing) ? compileTracing(obj(hcm.tracing)!, `${field}: tracing`) : undefined;
  const logs = Array.isArray(hcm.accessLog) ? (hcm.accessLog as Msg[]) : [];
  const accessLog = logs.length ? compileAccessLog(logs, `${field}: access_log`) : undefined;
  if (!tracing && accessLog === undefined) return undefined;
  return { ...(tracing && { tracing }), ...(accessLog !== undefined && { accessLog }) };
}

/** A port's telemetry over the waypoint's own: each part the port sets wins. */
export function mergeTelemetry(own: ListenerTelemetry | undefined, port: ListenerTelemetry | undefined): ListenerTelemetry | undefined {
  if (!own) return port;
  if (!port) return own;
  const tracing = port.tracing ?? own.tracing;
  const accessLog = port.accessLog ?? own.accessLog;
  return { ...(tracing && { tracing }), ...(accessLog !== undefined && { accessLog }) };
}

// The export pipeline's bounds and counts, here so that the tracer can name them without loading
// the OpenTelemetry SDK and its OTLP exporter (export.ts), which only a traced listener needs.
export interface ExportStats {
  /** Sampled spans ended. */
  ended: number;
  exported: number;
  /** Spans in exports that failed (collector down, no endpoint, rejected). */
  failed: number;
  /** Spans dropped because maxQueueSize were waiting already. */
  dropped: number;
}

export interface ExportLimits {
  /** Spans waiting or in flight at most (BatchSpanProcessor's maxQueueSize). */
  maxQueueSize: number;
  maxExportBatchSize: number;
  scheduledDelayMillis: number;
}

export const DEFAULT_EXPORT_LIMITS: ExportLimits = { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMillis: 1000 };

/** What makes two listeners' collectors the same pipeline. */
export const collectorKey = (c: TraceConfig) => JSON.stringify([c.cluster, c.path, c.timeoutMs, c.headers, c.serviceName]);
