// envoy.extensions.filters.http.ext_authz.v3.ExtAuthz compiled: what istiod writes for a CUSTOM
// AuthorizationPolicy's provider (mesh config extensionProviders envoyExtAuthzGrpc /
// envoyExtAuthzHttp). Fields the waypoint does not enforce are refused by name (a NACK): an
// authorizer config read partly could let requests through it was meant to stop.
import { envoyType } from '../../../api/envoy.ts';
import type { Msg } from '../../xds/envoy.ts';
import { listMatcher, metadataMatcher, type Matcher } from './match.ts';

/** Envoy's default timeout for the authorization call. */
export const DEFAULT_TIMEOUT_MS = 200;

export type AuthzService =
  | { kind: 'grpc'; cluster: string; authority: string; initialMetadata: [string, string][] }
  | {
      kind: 'http';
      cluster: string;
      pathPrefix: string;
      /** authorization_request.allowed_headers (deprecated there; the top-level allowed_headers also counts). */
      allowedHeaders?: Matcher;
      headersToAdd: [string, string][];
      upstream?: Matcher;
      upstreamAppend?: Matcher;
      client?: Matcher;
      clientOnSuccess?: Matcher;
    };

export interface ExtAuthzConfig {
  service: AuthzService;
  timeoutMs: number;
  failureModeAllow: boolean;
  failureModeAllowHeaderAdd: boolean;
  /** status_on_error (Envoy's default 403). */
  statusOnError: number;
  /** filter_enabled_metadata; absent: every request is checked. */
  enabled?: (metadata: ReadonlyMap<string, Record<string, unknown>>) => boolean;
  /** Which request headers go to the authorizer (top-level allowed_headers / disallowed_headers). */
  allowedHeaders?: Matcher;
  disallowedHeaders?: Matcher;
  /** enable_dynamic_metadata_ingestion (default true): the authorizer's dynamic_metadata kept. */
  ingestMetadata: boolean;
  /** with_request_body: up to maxBytes of the body go with the check (else 413, unless partial is allowed). */
  withBody?: { maxBytes: number; allowPartial: boolean; packAsBytes: boolean };
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const ms = (d: unknown): number | undefined => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : undefined;
};

/** Refuses any field of `m` not in `known` (oneof names protobufjs adds are skipped). */
function only(m: Msg, known: readonly string[], field: string, oneofs: readonly string[] = []): void {
  for (const k of Object.keys(m)) {
    if (known.includes(k) || oneofs.includes(k)) continue;
    throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
}

/** An envoy.type.v3.HttpStatus code: decoded by name (enums by name) or number. */
function statusCode(v: unknown, field: string): number {
  const code = obj(v)?.code;
  if (typeof code === 'number') return code;
  const values = (envoyType('envoy.type.v3.HttpStatus').fields.code!.resolvedType as { values: Record<string, number> } | null)?.values;
  const n = typeof code === 'string' ? values?.[code] : undefined;
  if (n === undefined || n < 100 || n > 599) throw new Error(`${field}.code: not an HTTP status`);
  return n;
}

const headerValues = (list: unknown, field: string): [string, string][] =>
  arr(list).map((h, i) => {
    const key = typeof h.key === 'string' ? h.key.toLowerCase() : '';
    if (!key || key.startsWith(':')) throw new Error(`${field}[${i}].key: empty or a pseudo-header`);
    only(h, ['key', 'value'], `${field}[${i}]`);
    return [key, typeof h.value === 'string' ? h.value : ''];
  });

function grpcService(g: Msg, field: string): { service: AuthzService; timeoutMs?: number } {
  only(g, ['envoyGrpc', 'timeout', 'initialMetadata'], field, ['targetSpecifier']);
  const e = obj(g.envoyGrpc);
  if (!e) throw new Error(`${field}: only envoy_grpc is supported (google_grpc is not)`);
  only(e, ['clusterName', 'authority'], `${field}.envoy_grpc`);
  const cluster = typeof e.clusterName === 'string' ? e.clusterName : '';
  if (!cluster) throw new Error(`${field}.envoy_grpc.cluster_name: empty`);
  const authority = typeof e.authority === 'string' && e.authority ? e.authority : cluster;
  return { service: { kind: 'grpc', cluster, authority, initialMetadata: headerValues(g.initialMetadata, `${field}.initial_metadata`) }, timeoutMs: ms(g.timeout) };
}

function httpService(h: Msg, field: string): { service: AuthzService; timeoutMs?: number } {
  only(h, ['serverUri', 'pathPrefix', 'authorizationRequest', 'authorizationResponse'], field);
  const uri = obj(h.serverUri) ?? {};
  only(uri, ['uri', 'cluster', 'timeout'], `${field}.server_uri`, ['httpUpstreamType']);
  const cluster = typeof uri.cluster === 'string' ? uri.cluster : '';
  if (!cluster) throw new Error(`${field}.server_uri.cluster: empty`);
  const pathPrefix = typeof h.pathPrefix === 'string' ? h.pathPrefix : '';
  if (pathPrefix && !pathPrefix.startsWith('/')) throw new Error(`${field}.path_prefix: must begin with /`);
  const req = obj(h.authorizationRequest) ?? {};
  only(req, ['allowedHeaders', 'headersToAdd'], `${field}.authorization_request`);
  const res = obj(h.authorizationResponse) ?? {};
  only(res, ['allowedUpstreamHeaders', 'allowedUpstreamHeadersToAppend', 'allowedClientHeaders', 'allowedClientHeadersOnSuccess'], `${field}.authorization_response`);
  const f = `${field}.authorization_response`;
  return {
    service: {
      kind: 'http', cluster, pathPrefix,
      allowedHeaders: listMatcher(req.allowedHeaders, `${field}.authorization_request.allowed_headers`),
      headersToAdd: headerValues(req.headersToAdd, `${field}.authorization_request.headers_to_add`),
      upstream: listMatcher(res.allowedUpstreamHeaders, `${f}.allowed_upstream_headers`),
      upstreamAppend: listMatcher(res.allowedUpstreamHeadersToAppend, `${f}.allowed_upstream_headers_to_append`),
      client: listMatcher(res.allowedClientHeaders, `${f}.allowed_client_headers`),
      clientOnSuccess: listMatcher(res.allowedClientHeadersOnSuccess, `${f}.allowed_client_headers_on_success`),
    },
    timeoutMs: ms(uri.timeout),
  };
}

/** Fields that only name statistics or change nothing the waypoint does: accepted. */
const INERT = ['statPrefix', 'chargeClusterResponseStats', 'clearRouteCache'];

export function compileExtAuthz(m: Msg, field: string): ExtAuthzConfig {
  only(m, ['grpcService', 'httpService', 'transportApiVersion', 'failureModeAllow', 'failureModeAllowHeaderAdd', 'statusOnError', 'filterEnabledMetadata', 'allowedHeaders', 'disallowedHeaders', 'enableDynamicMetadataIngestion', 'withRequestBody', ...INERT], field, ['services']);
  const body = obj(m.withRequestBody);
  if (body) only(body, ['maxRequestBytes', 'allowPartialMessage', 'packAsBytes'], `${field}.with_request_body`);
  const maxBytes = Number(body?.maxRequestBytes ?? 0);
  if (body && !(maxBytes > 0)) throw new Error(`${field}.with_request_body.max_request_bytes: must be above 0`);
  const version = m.transportApiVersion;
  if (version !== undefined && version !== 'V3' && version !== 'AUTO') throw new Error(`${field}.transport_api_version: ${String(version)} is not supported (V3 is)`);
  const built = obj(m.grpcService) ? grpcService(obj(m.grpcService)!, `${field}.grpc_service`) : obj(m.httpService) ? httpService(obj(m.httpService)!, `${field}.http_service`) : undefined;
  if (!built) throw new Error(`${field}: neither grpc_service nor http_service`);
  const fem = obj(m.filterEnabledMetadata);
  const ingest = obj(m.enableDynamicMetadataIngestion);
  return {
    service: built.service,
    timeoutMs: built.timeoutMs || DEFAULT_TIMEOUT_MS,
    failureModeAllow: m.failureModeAllow === true,
    failureModeAllowHeaderAdd: m.failureModeAllowHeaderAdd === true,
    statusOnError: m.statusOnError ? statusCode(m.statusOnError, `${field}.status_on_error`) : 403,
    ...(fem && { enabled: metadataMatcher(fem, `${field}.filter_enabled_metadata`) }),
    allowedHeaders: listMatcher(m.allowedHeaders, `${field}.allowed_headers`),
    disallowedHeaders: listMatcher(m.disallowedHeaders, `${field}.disallowed_headers`),
    // A BoolValue false decodes as {} (defaults are left out).
    ingestMetadata: !ingest || ingest.value === true,
    ...(body && { withBody: { maxBytes, allowPartial: body.allowPartialMessage === true, packAsBytes: body.packAsBytes === true } }),
  };
}
