// A mesh config extension provider (envoyExtAuthzHttp / envoyExtAuthzGrpc) -> the ExtAuthz filter
// config istiod writes for it (pilot/pkg/security/authz/builder/extauthz.go): the authorizer's
// cluster `outbound|<port>||<host>`, timeout (600s by default), failOpen -> failure_mode_allow,
// statusOnError -> status_on_error, the header lists as ignore-case matchers ("x*" prefix, "*x"
// suffix), includeAdditionalHeadersInCheck -> headers_to_add (by key), the request body settings,
// transport_api_version V3, and filter_enabled_metadata reading the shadow RBAC's effective policy
// id, so the authorizer is asked only for requests a CUSTOM rule of this provider matched.
//
// Anything that cannot be translated (a field weft does not know, a bad port, service or status)
// makes the provider unusable: the caller then denies what the provider's policies match.
import type { ExtensionProvider } from '../../model/mesh-config.ts';
import { envoyType } from './messages.ts';

type Json = Record<string, unknown>;

export const EXT_AUTHZ_PREFIX = 'istio-ext-authz';
export const EXT_AUTHZ_STAT_PREFIX = 'istio_ext_authz_';
export const EXT_AUTHZ_TYPE = 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
export const HTTP_RBAC_FILTER = 'envoy.filters.http.rbac';

const COMMON = ['service', 'port', 'timeout', 'failOpen', 'statusOnError', 'includeRequestBodyInCheck', 'clearRouteCache'];
const FIELDS: Record<'envoyExtAuthzHttp' | 'envoyExtAuthzGrpc', string[]> = {
  envoyExtAuthzGrpc: COMMON,
  envoyExtAuthzHttp: [...COMMON, 'pathPrefix', 'includeHeadersInCheck', 'includeRequestHeadersInCheck', 'includeAdditionalHeadersInCheck', 'headersToUpstreamOnAllow', 'headersToDownstreamOnAllow', 'headersToDownstreamOnDeny'],
};

/** The policy id prefix of a provider's CUSTOM rules (istiod's, one per provider). */
export const customPrefix = (provider: string) => `${EXT_AUTHZ_PREFIX}-${provider}`;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

let statusCodes: Set<number> | undefined;
function validStatus(code: number): boolean {
  if (!statusCodes) {
    const f = envoyType('envoy.type.v3.HttpStatus').fields.code!;
    f.resolve();
    statusCodes = new Set(Object.values((f.resolvedType as unknown as { values: Record<string, number> }).values));
  }
  return statusCodes.has(code);
}

/** protobuf JSON Duration ("10s", "0.5s") -> {seconds, nanos}. */
function duration(v: string): Json | undefined {
  const m = /^(\d{1,10})(?:\.(\d{1,9}))?s$/.exec(v);
  if (!m) return undefined;
  const nanos = m[2] ? Number(m[2].padEnd(9, '0')) : 0;
  return { seconds: Number(m[1]), ...(nanos && { nanos }) };
}

/** The ExtAuthz config of a provider, or the reasons it cannot be built. */
export function buildExtAuthz(p: ExtensionProvider): { config: Json } | { errors: string[] } {
  const errors: string[] = [];
  if (p.kind !== 'envoyExtAuthzHttp' && p.kind !== 'envoyExtAuthzGrpc') return { errors: [`${p.kind} is not an external authorizer (envoyExtAuthzHttp or envoyExtAuthzGrpc)`] };
  const s = p.spec;
  for (const k of Object.keys(s)) if (!FIELDS[p.kind].includes(k)) errors.push(`${k}: unknown field`);
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(p.name)) errors.push(`name ${JSON.stringify(p.name)}: must be a DNS label (lowercase letters, digits, '-'; at most 63)`);

  const port = typeof s.port === 'number' ? s.port : typeof s.port === 'string' && /^\d+$/.test(s.port) ? Number(s.port) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) errors.push(`port: must be in 1-65535, found ${JSON.stringify(s.port)}`);
  const service = typeof s.service === 'string' ? s.service : '';
  const parts = service.split('/');
  const host = parts.length === 2 ? parts[1]! : service;
  if (!service || parts.length > 2 || (parts.length === 2 && !parts[0]) || !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) errors.push(`service: expected <hostname> or <namespace>/<hostname>, found ${JSON.stringify(s.service)}`);
  let status: Json | undefined;
  if (s.statusOnError !== undefined) {
    const code = typeof s.statusOnError === 'string' && /^\d{3}$/.test(s.statusOnError) ? Number(s.statusOnError) : NaN;
    if (!validStatus(code)) errors.push(`statusOnError: unsupported status ${JSON.stringify(s.statusOnError)}`);
    else status = { code };
  }
  const timeout = s.timeout === undefined ? { seconds: 600 } : typeof s.timeout === 'string' ? duration(s.timeout) : undefined;
  if (!timeout) errors.push(`timeout: expected a duration such as "10s" or "0.5s", found ${JSON.stringify(s.timeout)}`);
  if (s.failOpen !== undefined && typeof s.failOpen !== 'boolean') errors.push('failOpen: expected a boolean');
  if (s.clearRouteCache !== undefined && typeof s.clearRouteCache !== 'boolean') errors.push('clearRouteCache: expected a boolean');
  const body = requestBody(s.includeRequestBodyInCheck, errors);

  const cluster = `outbound|${port}||${host}`;
  const common: Json = {
    ...(status && { statusOnError: status }),
    ...(s.failOpen === true && { failureModeAllow: true }),
    transportApiVersion: 'V3',
    filterEnabledMetadata: {
      filter: HTTP_RBAC_FILTER,
      path: [{ key: `${EXT_AUTHZ_STAT_PREFIX}shadow_effective_policy_id` }],
      value: { stringMatch: { prefix: customPrefix(p.name) } },
    },
    ...(body && { withRequestBody: body }),
  };
  if (p.kind === 'envoyExtAuthzGrpc') {
    if (errors.length) return { errors };
    return { config: { ...common, grpcService: { envoyGrpc: { clusterName: cluster, authority: host }, timeout } } };
  }

  if (s.pathPrefix !== undefined && (typeof s.pathPrefix !== 'string' || !s.pathPrefix.startsWith('/') || /[\s?#]/.test(s.pathPrefix))) errors.push(`pathPrefix: must be a path beginning with "/", found ${JSON.stringify(s.pathPrefix)}`);
  const headers = (k: string) => headerList(s[k], k, errors);
  const allowed = headers('includeRequestHeadersInCheck') ?? headers('includeHeadersInCheck');
  const toUpstream = headers('headersToUpstreamOnAllow');
  const onDeny = headers('headersToDownstreamOnDeny');
  const onAllow = headers('headersToDownstreamOnAllow');
  let headersToAdd: Json[] | undefined;
  const add = s.includeAdditionalHeadersInCheck;
  if (add !== undefined) {
    if (!isObj(add) || Object.values(add).some((v) => typeof v !== 'string')) errors.push('includeAdditionalHeadersInCheck: expected a map of strings');
    else if (Object.keys(add).length) headersToAdd = Object.keys(add).sort().map((key) => ({ key, value: add[key] }));
  }
  if (errors.length) return { errors };
  const httpService: Json = {
    serverUri: { uri: `http://${host}`, cluster, timeout },
    ...(typeof s.pathPrefix === 'string' && s.pathPrefix && { pathPrefix: s.pathPrefix }),
    ...(headersToAdd && { authorizationRequest: { headersToAdd } }),
    ...((toUpstream || onDeny || onAllow) && {
      authorizationResponse: { ...(toUpstream && { allowedUpstreamHeaders: toUpstream }), ...(onDeny && { allowedClientHeaders: onDeny }), ...(onAllow && { allowedClientHeadersOnSuccess: onAllow }) },
    }),
  };
  return { config: { ...common, httpService, ...(allowed && { allowedHeaders: allowed }) } };
}

/** A list of header names as a ListStringMatcher (ignore case; "x*" prefix, "*x" suffix). */
function headerList(v: unknown, field: string, errors: string[]): Json | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((h) => typeof h !== 'string' || !h)) {
    errors.push(`${field}: expected a list of header names`);
    return undefined;
  }
  if (!v.length) return undefined;
  const patterns: Json[] = [];
  for (const h of v as string[]) {
    if (h === '*') errors.push(`${field}: a single wildcard ("*") is not supported, use a prefix or a suffix`);
    else if (h.startsWith('*')) patterns.push({ suffix: h.slice(1), ignoreCase: true });
    else if (h.endsWith('*')) patterns.push({ prefix: h.slice(0, -1), ignoreCase: true });
    else patterns.push({ exact: h, ignoreCase: true });
  }
  return { patterns };
}

function requestBody(v: unknown, errors: string[]): Json | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) {
    errors.push('includeRequestBodyInCheck: expected an object');
    return undefined;
  }
  for (const k of Object.keys(v)) if (!['maxRequestBytes', 'allowPartialMessage', 'packAsBytes'].includes(k)) errors.push(`includeRequestBodyInCheck.${k}: unknown field`);
  const max = v.maxRequestBytes;
  if (max !== undefined && (typeof max !== 'number' || !Number.isInteger(max) || max < 0 || max > 0xffffffff)) errors.push('includeRequestBodyInCheck.maxRequestBytes: expected an unsigned integer');
  for (const k of ['allowPartialMessage', 'packAsBytes']) if (v[k] !== undefined && typeof v[k] !== 'boolean') errors.push(`includeRequestBodyInCheck.${k}: expected a boolean`);
  return { ...(typeof max === 'number' && max > 0 && { maxRequestBytes: max }), ...(v.allowPartialMessage === true && { allowPartialMessage: true }), ...(v.packAsBytes === true && { packAsBytes: true }) };
}
