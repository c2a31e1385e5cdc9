// The Telemetry API (telemetry.istio.io/v1) for a waypoint -> the HttpConnectionManager's tracing and
// access log, as istiod resolves it for a waypoint proxy:
// - which Telemetry objects apply, least specific first: the root namespace's one without selector
//   or targetRefs (mesh-wide), the namespace's one without selector or targetRefs (its waypoints),
//   then those whose targetRefs name the Gateway or the Service (attachments.ts). Of several
//   namespace-wide ones the oldest applies (Istio's order: creation time, then name);
// - how they merge: per field, a more specific object's value wins (providers, sampling,
//   disableSpanReporting, access logging's disabled); custom tags merge by name;
// - the tracing provider: the one named by the objects, else meshConfig.defaultProviders.tracing;
//   an `opentelemetry` extension provider over OTLP/HTTP becomes envoy.tracers.opentelemetry with
//   an http_service to `outbound|<port>||<service>`; sampling unset is Istio's default, 1 %.
//
// A service port's Listener carries it only when a Telemetry targets its Service (then its result
// is the chain mesh -> namespace -> Service); the waypoint's own Listener carries the chain
// mesh -> namespace -> Gateway, and the waypoint lets a port's decision override its own.
//
// Access logging: weft's waypoint logs every request by default (as Istio with accessLogFile
// /dev/stdout). Enabled is written as istiod writes its built-in `envoy` provider, the file access
// logger to /dev/stdout; disabled, where istiod would leave access_log out (its default being no
// log), is the same logger to /dev/null, so "off" survives the waypoint's default of "on".
//
// Metric overrides configure Istio's stats filter, which has no Envoy proto here: reported, ignored.
import type { KObject } from '../../../kube/objects.ts';
import { ofKind, type NsObjects } from '../../config/config-store.ts';
import type { ExtensionProvider, MeshConfig } from '../../model/mesh-config.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import type { TargetRef } from '../../model/security/attachments.ts';
import { any } from './messages.ts';

export const OTEL_TRACER = 'envoy.tracers.opentelemetry';
export const OTEL_CONFIG = 'envoy.config.trace.v3.OpenTelemetryConfig';
export const FILE_LOGGER = 'envoy.access_loggers.file';
export const FILE_ACCESS_LOG = 'envoy.extensions.access_loggers.file.v3.FileAccessLog';
/** Istio's sampling when neither Telemetry nor the mesh's proxy config sets one (PILOT_TRACE_SAMPLING). */
export const DEFAULT_SAMPLING = 1;
/** The OTLP/HTTP traces path (the provider's http.path default). */
export const DEFAULT_OTLP_PATH = '/v1/traces';
/** The OTLP exporter's default timeout, used when the provider's http.timeout is unset. */
export const DEFAULT_OTLP_TIMEOUT_MS = 10_000;
/** Istio's built-in access log provider (the file logger to /dev/stdout). */
const BUILTIN_LOG_PROVIDER = 'envoy';

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The part of listener-extras.ts's AttachContext read here (that module lists this contributor). */
interface AttachContext {
  namespace: string;
  target: TargetRef;
  mesh: MeshConfig;
  objects: NsObjects | undefined;
  rootObjects: NsObjects | undefined;
  rootNamespace: string;
  problems: NetworkingProblem[];
}

/** What it adds to a Listener (ListenerExtras' tracing and access log). */
interface TelemetryExtras {
  tracing?: Record<string, unknown>;
  accessLog?: Record<string, unknown>[];
}

type Problem = (obj: { kind: string; metadata: { namespace?: string; name: string } }, field: string, reason: string) => void;

function reporter(problems: NetworkingProblem[]): Problem {
  return (obj, field, reason) => {
    const p = { kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field, reason };
    // A contributor runs per listener: one object's problem is reported once.
    if (!problems.some((q) => q.kind === p.kind && q.namespace === p.namespace && q.name === p.name && q.field === p.field && q.reason === p.reason)) problems.push(p);
  };
}

const byAge = (a: KObject, b: KObject) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '') || a.metadata.name.localeCompare(b.metadata.name);

const specOf = (o: KObject): Record<string, unknown> => {
  const s = (o as { spec?: unknown }).spec;
  return isObj(s) ? s : {};
};

/** Neither a selector (with labels) nor target refs: the namespace's (or, in the root namespace, the mesh's). */
function isNamespaceWide(o: KObject): boolean {
  const s = specOf(o);
  const labels = isObj(s.selector) && isObj(s.selector.matchLabels) ? Object.keys(s.selector.matchLabels) : [];
  return !labels.length && s.targetRef === undefined && s.targetRefs === undefined;
}

/** The namespace-wide Telemetry of a namespace: the oldest; the others are reported. */
function namespaceWide(g: NsObjects | undefined, problem: Problem): KObject | undefined {
  const wide = ofKind(g, 'Telemetry').filter(isNamespaceWide).sort(byAge);
  for (const o of wide.slice(1)) problem(o, 'spec', `another Telemetry without selector or targetRefs (${wide[0]!.metadata.name}, the oldest) applies to the namespace: ignored`);
  return wide[0];
}

/** The Telemetry objects for a listener, least specific first; undefined: the listener carries none. */
export function applicableTelemetry(attached: readonly KObject[], ctx: AttachContext, problem: Problem): KObject[] | undefined {
  const targeted = attached.filter((o) => o.kind === 'Telemetry').sort(byAge);
  if (ctx.target.kind !== 'Gateway' && !targeted.length) return undefined;
  const chain: KObject[] = [];
  const root = namespaceWide(ctx.rootObjects, problem);
  if (root) chain.push(root);
  if (ctx.namespace !== ctx.rootNamespace) {
    const ns = namespaceWide(ctx.objects, problem);
    if (ns) chain.push(ns);
  }
  return [...chain, ...targeted];
}

/** Whether a namespace's waypoints get telemetry without any Telemetry targeting their Gateway. */
export function hasWideTelemetry(ns: string, objects: NsObjects | undefined, root: NsObjects | undefined, rootNamespace: string, mesh: MeshConfig): boolean {
  if (mesh.defaultProviders.tracing.length) return true;
  const wide = (g: NsObjects | undefined) => ofKind(g, 'Telemetry').some(isNamespaceWide);
  return wide(root) || (ns !== rootNamespace && wide(objects));
}

const TRACING_FIELDS = new Set(['providers', 'randomSamplingPercentage', 'disableSpanReporting', 'customTags', 'match', 'useRequestIdForTraceSampling']);
const LOGGING_FIELDS = new Set(['providers', 'disabled', 'match']);
const SPEC_FIELDS = new Set(['selector', 'targetRef', 'targetRefs', 'tracing', 'accessLogging', 'metrics']);

/** A match mode the waypoint's (server side) span or log is part of. */
function appliesToServer(entry: Record<string, unknown>, o: KObject, field: string, problem: Problem): boolean {
  const mode = isObj(entry.match) ? entry.match.mode : undefined;
  if (mode === undefined || mode === 'CLIENT_AND_SERVER' || mode === 'SERVER') return true;
  if (mode !== 'CLIENT') problem(o, `${field}.match.mode`, `${String(mode)} is not a workload mode (CLIENT_AND_SERVER, CLIENT, SERVER): entry ignored`);
  return false;
}

const providerNames = (entry: Record<string, unknown>): string[] =>
  Array.isArray(entry.providers) ? entry.providers.flatMap((p) => (isObj(p) && typeof p.name === 'string' && p.name ? [p.name] : [])) : [];

interface TagSpec {
  tag: string;
  literal?: { value: string };
  environment?: { name: string; defaultValue?: string };
  requestHeader?: { name: string; defaultValue?: string };
}

function customTag(tag: string, v: unknown, o: KObject, field: string, problem: Problem): TagSpec | undefined {
  if (!isObj(v)) return void problem(o, field, 'expected an object with literal, environment or header: ignored');
  const kinds = Object.keys(v);
  if (kinds.length !== 1) return void problem(o, field, `expected exactly one of literal, environment, header, found ${kinds.join(', ') || 'none'}: ignored`);
  const k = kinds[0]!;
  const body = isObj(v[k]) ? (v[k] as Record<string, unknown>) : {};
  const dflt = typeof body.defaultValue === 'string' ? { defaultValue: body.defaultValue } : {};
  if (k === 'literal' && typeof body.value === 'string') return { tag, literal: { value: body.value } };
  if (k === 'environment' && typeof body.name === 'string' && body.name) return { tag, environment: { name: body.name, ...dflt } };
  if (k === 'header' && typeof body.name === 'string' && body.name) return { tag, requestHeader: { name: body.name, ...dflt } };
  return void problem(o, `${field}.${k}`, `${['literal', 'environment', 'header'].includes(k) ? 'missing its value or name' : 'not a custom tag kind (literal, environment, header)'}: ignored`);
}

/** Go's duration strings as Istio writes them ("10s", "500ms", "1m"). */
function durationMs(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h']);
}

/** An `opentelemetry` provider -> Envoy's tracer config; undefined (with a problem) if weft cannot export to it. */
function otelProvider(p: ExtensionProvider, ctx: AttachContext, meshProblem: Problem, cm: KObject | undefined): Record<string, unknown> | undefined {
  const at = (field: string, reason: string) => (cm ? meshProblem(cm, `${p.field}${field}`, `provider ${p.name}: ${reason}`) : undefined);
  const s = p.spec;
  const svc = typeof s.service === 'string' ? s.service : '';
  // `<namespace>/<host>` names the host of that namespace's service.
  const host = svc.includes('/') ? svc.slice(svc.indexOf('/') + 1) : svc;
  const port = s.port;
  if (!host) return void at('.service', 'empty: no tracing');
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return void at('.port', `${String(port)} is not a port: no tracing`);
  if (!isObj(s.http)) return void at('.http', 'unset means OTLP over gRPC, which the waypoint does not export (it posts OTLP/HTTP protobuf): no tracing');
  for (const k of Object.keys(s)) if (!['service', 'port', 'http', 'maxTagLength', 'resourceDetectors'].includes(k)) at(`.${k}`, 'not supported by weft: ignored');
  if (s.resourceDetectors !== undefined) at('.resourceDetectors', 'not supported by weft (the waypoint reports service.name only): ignored');
  const http = s.http;
  const path = typeof http.path === 'string' && http.path ? http.path : DEFAULT_OTLP_PATH;
  let timeout = DEFAULT_OTLP_TIMEOUT_MS;
  if (http.timeout !== undefined) {
    const t = durationMs(http.timeout);
    if (t === undefined || t <= 0) at('.http.timeout', `${String(http.timeout)} is not a duration: ${DEFAULT_OTLP_TIMEOUT_MS} ms`);
    else timeout = t;
  }
  const headers: { header: { key: string; value: string }; appendAction: string }[] = [];
  for (const [i, h] of (Array.isArray(http.headers) ? http.headers : []).entries()) {
    const f = `.http.headers[${i}]`;
    if (!isObj(h) || typeof h.name !== 'string' || !h.name) {
      at(f, 'expected a name: ignored');
      continue;
    }
    let value: string | undefined;
    if (typeof h.value === 'string') value = h.value;
    else if (typeof h.envName === 'string') {
      value = process.env[h.envName];
      if (value === undefined) at(`${f}.envName`, `${h.envName} is not set in the control plane's environment: header not sent`);
    } else at(f, 'expected value or envName: ignored');
    if (value !== undefined) headers.push({ header: { key: h.name, value }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' });
  }
  const serviceName = ctx.target.kind === 'Gateway' ? `${ctx.target.name}.${ctx.namespace}` : '';
  return {
    name: OTEL_TRACER,
    typedConfig: any(OTEL_CONFIG, {
      httpService: {
        httpUri: { uri: `${host}/${path.replace(/^\/+/, '')}`, cluster: `outbound|${port}||${host}`, timeout: { seconds: Math.floor(timeout / 1000), nanos: (timeout % 1000) * 1e6 } },
        requestHeadersToAdd: headers,
      },
      ...(serviceName && { serviceName }),
    }),
  };
}

function percent(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 100 ? v : undefined;
}

/** The Contributor: tracing, access logging and metrics of the Telemetry objects that apply. */
export function telemetryContributor(attached: readonly KObject[], ctx: AttachContext): TelemetryExtras | undefined {
  const problem = reporter(ctx.problems);
  const chain = applicableTelemetry(attached, ctx, problem);
  if (!chain) return undefined;
  const mesh = ctx.mesh;
  let tracingProviders = mesh.defaultProviders.tracing;
  let tracingFrom: { obj?: KObject; field: string } = { field: 'defaultProviders.tracing' };
  let sampling: number | undefined;
  let spansOff = false;
  const tags = new Map<string, TagSpec>();
  let accessLog: boolean | undefined;
  for (const o of chain) {
    const s = specOf(o);
    for (const k of Object.keys(s)) if (!SPEC_FIELDS.has(k)) problem(o, `spec.${k}`, 'not supported by weft: ignored');
    for (const [i, t] of (Array.isArray(s.tracing) ? s.tracing : []).entries()) {
      const field = `spec.tracing[${i}]`;
      if (!isObj(t)) continue;
      for (const k of Object.keys(t)) if (!TRACING_FIELDS.has(k)) problem(o, `${field}.${k}`, 'not supported by weft: ignored');
      if (!appliesToServer(t, o, field, problem)) continue;
      const names = providerNames(t);
      if (names.length) [tracingProviders, tracingFrom] = [names, { obj: o, field: `${field}.providers` }];
      if (t.disableSpanReporting !== undefined) spansOff = t.disableSpanReporting === true;
      if (t.randomSamplingPercentage !== undefined) {
        const p = percent(t.randomSamplingPercentage);
        if (p === undefined) problem(o, `${field}.randomSamplingPercentage`, `${String(t.randomSamplingPercentage)} is not a percentage (0 to 100): ignored`);
        else sampling = p;
      }
      if (t.useRequestIdForTraceSampling === false) problem(o, `${field}.useRequestIdForTraceSampling`, 'false is not supported by weft (the waypoint samples as Envoy with x-request-id): ignored');
      if (t.customTags !== undefined && !isObj(t.customTags)) problem(o, `${field}.customTags`, 'expected a map of tag name to literal, environment or header: ignored');
      for (const [name, v] of Object.entries(isObj(t.customTags) ? t.customTags : {})) {
        const tag = customTag(name, v, o, `${field}.customTags.${name}`, problem);
        if (tag) tags.set(name, tag);
      }
    }
    for (const [i, l] of (Array.isArray(s.accessLogging) ? s.accessLogging : []).entries()) {
      const field = `spec.accessLogging[${i}]`;
      if (!isObj(l)) continue;
      for (const k of Object.keys(l)) if (!LOGGING_FIELDS.has(k)) problem(o, `${field}.${k}`, `not supported by weft: ignored${k === 'filter' ? ' (every request is logged while logging is on)' : ''}`);
      if (!appliesToServer(l, o, field, problem)) continue;
      for (const [j, name] of providerNames(l).entries()) {
        const p = mesh.extensionProviders.get(name);
        if (name !== BUILTIN_LOG_PROVIDER && p?.kind !== 'envoyFileAccessLog')
          problem(o, `${field}.providers[${j}]`, p ? `provider ${name} is ${p.kind}: weft's waypoint writes its own log only (envoy, envoyFileAccessLog): taken as that` : `unknown provider ${name} (not in meshConfig extensionProviders): taken as the waypoint's own log`);
      }
      accessLog = l.disabled !== true;
    }
    for (const [i, m] of (Array.isArray(s.metrics) ? s.metrics : []).entries()) {
      const field = `spec.metrics[${i}]`;
      if (!isObj(m)) continue;
      for (const [j, name] of providerNames(m).entries())
        if (name !== 'prometheus' && mesh.extensionProviders.get(name)?.kind !== 'prometheus') problem(o, `${field}.providers[${j}]`, `provider ${name}: the waypoint serves Istio's metrics to Prometheus only: ignored`);
      for (const k of Object.keys(m)) if (k !== 'providers') problem(o, `${field}.${k}`, "not supported by weft's waypoint (Istio's stats filter settings): ignored");
    }
  }
  const out: TelemetryExtras = {};
  if (accessLog !== undefined) out.accessLog = [{ name: FILE_LOGGER, typedConfig: any(FILE_ACCESS_LOG, { path: accessLog ? '/dev/stdout' : '/dev/null' }) }];
  if (tracingProviders.length && !spansOff) {
    const at = (field: string, reason: string) => (tracingFrom.obj ? problem(tracingFrom.obj, field, reason) : mesh.source ? problem(mesh.source, `data.mesh: ${field}`, reason) : undefined);
    if (tracingProviders.length > 1) at(tracingFrom.field, `only one tracing provider per proxy (Envoy's): ${tracingProviders[0]} applies, the others are ignored`);
    const name = tracingProviders[0]!;
    const p = mesh.extensionProviders.get(name);
    if (!p) at(tracingFrom.field, `unknown provider ${name} (not in meshConfig extensionProviders): no tracing`);
    else if (p.kind !== 'opentelemetry') at(tracingFrom.field, `provider ${name} is ${p.kind}: weft's waypoint exports to opentelemetry providers only: no tracing`);
    else {
      const provider = otelProvider(p, ctx, problem, mesh.source);
      if (provider)
        out.tracing = {
          provider,
          randomSampling: { value: sampling ?? mesh.tracingSampling ?? DEFAULT_SAMPLING },
          clientSampling: { value: 100 },
          overallSampling: { value: 100 },
          ...(tags.size && { customTags: [...tags.values()] }),
        };
    }
  }
  return out.tracing || out.accessLog ? out : undefined;
}
