// Envoy's JWT authentication filter (envoy.filters.http.jwt_authn, a JwtAuthentication), as
// istiod writes it for a RequestAuthentication: providers (issuer, audiences, keys inline or
// remote, where the token is, what to output) and rules whose requirement is a tree of
// provider_name / requires_any / requires_all / allow_missing / allow_missing_or_failed. Per request
// the first rule whose match takes the path decides (none: the request passes untouched).
//
// A verified token sets FilterRequest.auth and the `istio_authn` metadata (what RBAC's
// requestPrincipals and request.auth.claims read), the provider's payload_in_metadata under
// `envoy.filters.http.jwt_authn`, its claim_to_headers and forward_payload_header, and is removed
// from its header unless `forward`. A failure is Envoy's local reply: 401 (403 for audiences)
// with the status text as body, `www-authenticate: Bearer realm="<url>"` (with
// `error="invalid_token"` unless the token is missing) and details `jwt_authn_access_denied{...}`.
// Fields the waypoint cannot act on refuse the Listener, naming the field.
import type { JWTVerifyGetKey } from 'jose';
import type { Msg } from '../xds/envoy.ts';
import { pathMatcher } from '../xds/string-matcher.ts';
import { STAGE, type FilterReply, type FilterRequest, type HttpFilter } from './chain.ts';
import { JwtCache } from './jwt-cache.ts';
import { JwksCache, localJwks, type JwksEnv } from './jwt-jwks.ts';
import { audiencesOf, parseJwt, STATUS, verifyJwt, type ParsedJwt, type Status } from './jwt-verify.ts';

export const JWT_AUTHN_FILTER = 'envoy.filters.http.jwt_authn';
export const JWT_AUTHN_TYPE = 'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';

/** Envoy's default clock skew for exp and nbf. */
const DEFAULT_SKEW_S = 60;

interface Location {
  kind: 'header' | 'param' | 'cookie';
  name: string;
  prefix: string;
}

interface Provider {
  name: string;
  issuer: string;
  audiences: string[];
  keys: JWTVerifyGetKey;
  forward: boolean;
  locations: Location[];
  payloadHeader?: string;
  padPayloadHeader: boolean;
  payloadInMetadata?: string;
  claimToHeaders: { header: string; claim: string }[];
  skewS: number;
  /** Tokens verified with this provider's keys (per provider, as Envoy's). */
  cache: JwtCache;
}

type Requirement =
  | { kind: 'provider'; provider: Provider; audiences?: string[] }
  | { kind: 'any'; children: Requirement[]; allowMissing: boolean; allowFailed: boolean }
  | { kind: 'all'; children: Requirement[] }
  | { kind: 'allowMissing' }
  | { kind: 'allowMissingOrFailed' };

interface Rule {
  matches: (path: string) => boolean;
  requires?: Requirement;
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const ms = (d: unknown): number => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : 0;
};

function refuseUnknown(m: Msg, known: readonly string[], field: string): void {
  for (const k of Object.keys(m)) if (!known.includes(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
}
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Header names Envoy would refuse to add or that would change the request's routing facts. */
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
function headerName(v: unknown, field: string): string {
  const n = str(v).toLowerCase();
  if (!n || !HEADER_NAME.test(n)) throw new Error(`${field}: ${JSON.stringify(v)} is not a header name`);
  if (n === 'host' || n.startsWith(':')) throw new Error(`${field}: ${n} cannot be set`);
  return n;
}

/** What the filter uses of the waypoint's FilterEnv (registry.ts). */
export interface JwtEnv {
  clusterEndpoints?: JwksEnv['clusterEndpoints'];
  jwks?: { caPem?: string; cooldownMs?: number };
}

const caches = new WeakMap<JwtEnv, JwksCache>();
function cacheFor(env: JwtEnv): JwksCache {
  let c = caches.get(env);
  if (!c) caches.set(env, (c = new JwksCache({ clusterEndpoints: env.clusterEndpoints, caPem: env.jwks?.caPem, cooldownMs: env.jwks?.cooldownMs })));
  return c;
}

const PROVIDER_FIELDS = [
  'issuer', 'audiences', 'remoteJwks', 'localJwks', 'forward', 'fromHeaders', 'fromParams', 'fromCookies', 'forwardPayloadHeader',
  'padForwardPayloadHeader', 'payloadInMetadata', 'clockSkewSeconds', 'claimToHeaders', 'clearRouteCache', 'jwtCacheConfig', 'jwksSourceSpecifier',
] as const;

function compileProvider(name: string, p: Msg, field: string, env: JwtEnv): Provider {
  refuseUnknown(p, PROVIDER_FIELDS, field);
  let keys: JWTVerifyGetKey;
  if (obj(p.localJwks)) {
    const ds = obj(p.localJwks)!;
    refuseUnknown(ds, ['inlineString', 'inlineBytes', 'specifier'], `${field}.local_jwks`);
    const text = typeof ds.inlineString === 'string' ? ds.inlineString : ds.inlineBytes instanceof Uint8Array ? Buffer.from(ds.inlineBytes).toString('utf8') : undefined;
    if (text === undefined) throw new Error(`${field}.local_jwks: only inline_string and inline_bytes are supported`);
    keys = localJwks(text, `${field}.local_jwks`);
  } else if (obj(p.remoteJwks)) {
    const r = obj(p.remoteJwks)!;
    const at = `${field}.remote_jwks`;
    refuseUnknown(r, ['httpUri', 'cacheDuration', 'asyncFetch', 'retryPolicy'], at);
    if (r.asyncFetch !== undefined) throw new Error(`${at}.async_fetch: not supported by the waypoint`);
    if (r.retryPolicy !== undefined) throw new Error(`${at}.retry_policy: not supported by the waypoint`);
    const h = obj(r.httpUri);
    if (!h) throw new Error(`${at}.http_uri: required`);
    refuseUnknown(h, ['uri', 'cluster', 'timeout', 'httpUpstreamType'], `${at}.http_uri`);
    let url: URL;
    try {
      url = new URL(str(h.uri));
    } catch {
      throw new Error(`${at}.http_uri.uri: ${JSON.stringify(h.uri)} is not a URL`);
    }
    // Keys fetched in the clear could be anyone's: only HTTPS.
    if (url.protocol !== 'https:') throw new Error(`${at}.http_uri.uri: only https is supported`);
    const cluster = str(h.cluster);
    if (!cluster) throw new Error(`${at}.http_uri.cluster: required`);
    const timeoutMs = ms(h.timeout);
    if (timeoutMs <= 0) throw new Error(`${at}.http_uri.timeout: required and positive`);
    // Envoy's default cache_duration is 10 minutes.
    const cacheMs = r.cacheDuration === undefined ? 600_000 : ms(r.cacheDuration);
    keys = cacheFor(env).get({ uri: url.href, cluster, timeoutMs: Math.min(timeoutMs, 60_000), cacheMs });
  } else throw new Error(`${field}: neither local_jwks nor remote_jwks`);

  const locations: Location[] = [];
  arr(p.fromHeaders).forEach((h, i) => {
    const m = obj(h) ?? {};
    refuseUnknown(m, ['name', 'valuePrefix'], `${field}.from_headers[${i}]`);
    locations.push({ kind: 'header', name: headerName(m.name, `${field}.from_headers[${i}].name`), prefix: str(m.valuePrefix) });
  });
  arr(p.fromParams).forEach((n, i) => {
    if (!str(n)) throw new Error(`${field}.from_params[${i}]: empty`);
    locations.push({ kind: 'param', name: str(n), prefix: '' });
  });
  arr(p.fromCookies).forEach((n, i) => {
    if (!str(n)) throw new Error(`${field}.from_cookies[${i}]: empty`);
    locations.push({ kind: 'cookie', name: str(n), prefix: '' });
  });
  // Envoy's default: `Authorization: Bearer <token>` and the `access_token` query parameter.
  if (!locations.length) locations.push({ kind: 'header', name: 'authorization', prefix: 'Bearer ' }, { kind: 'param', name: 'access_token', prefix: '' });

  const claimToHeaders = arr(p.claimToHeaders).map((c, i) => {
    const m = obj(c) ?? {};
    refuseUnknown(m, ['headerName', 'claimName'], `${field}.claim_to_headers[${i}]`);
    if (!str(m.claimName)) throw new Error(`${field}.claim_to_headers[${i}].claim_name: empty`);
    return { header: headerName(m.headerName, `${field}.claim_to_headers[${i}].header_name`), claim: str(m.claimName) };
  });
  const jc = obj(p.jwtCacheConfig);
  if (jc) refuseUnknown(jc, ['jwtCacheSize'], `${field}.jwt_cache_config`);
  return {
    name,
    issuer: str(p.issuer),
    audiences: arr(p.audiences).map(str).filter(Boolean),
    keys,
    forward: p.forward === true,
    locations,
    ...(str(p.forwardPayloadHeader) && { payloadHeader: headerName(p.forwardPayloadHeader, `${field}.forward_payload_header`) }),
    padPayloadHeader: p.padForwardPayloadHeader === true,
    ...(str(p.payloadInMetadata) && { payloadInMetadata: str(p.payloadInMetadata) }),
    claimToHeaders,
    skewS: typeof p.clockSkewSeconds === 'number' && p.clockSkewSeconds > 0 ? p.clockSkewSeconds : DEFAULT_SKEW_S,
    // Always on (Envoy's only with jwt_cache_config): it changes no answer, only the CPU a request costs.
    cache: new JwtCache(typeof jc?.jwtCacheSize === 'number' ? jc.jwtCacheSize : undefined),
  };
}

function compileRequirement(r: Msg, field: string, providers: ReadonlyMap<string, Provider>, depth = 0): Requirement {
  if (depth > 8) throw new Error(`${field}: requirements nested too deep`);
  refuseUnknown(r, ['providerName', 'providerAndAudiences', 'requiresAny', 'requiresAll', 'allowMissingOrFailed', 'allowMissing', 'requiresType'], field);
  const named = (n: unknown, at: string) => {
    const p = providers.get(str(n));
    if (!p) throw new Error(`${at}: no provider ${JSON.stringify(n)}`);
    return p;
  };
  if (typeof r.providerName === 'string') return { kind: 'provider', provider: named(r.providerName, `${field}.provider_name`) };
  if (obj(r.providerAndAudiences)) {
    const pa = obj(r.providerAndAudiences)!;
    return { kind: 'provider', provider: named(pa.providerName, `${field}.provider_and_audiences.provider_name`), audiences: arr(pa.audiences).map(str) };
  }
  if (obj(r.requiresAny) || obj(r.requiresAll)) {
    const any = obj(r.requiresAny);
    const list = arr((any ?? obj(r.requiresAll)!).requirements);
    const at = `${field}.${any ? 'requires_any' : 'requires_all'}`;
    if (list.length < 2) throw new Error(`${at}.requirements: at least two`);
    const children = list.map((c, i) => compileRequirement(obj(c) ?? {}, `${at}.requirements[${i}]`, providers, depth + 1));
    if (!any) return { kind: 'all', children };
    // allow_* inside an OR-list are flags of the list (Envoy's AnyVerifier), not verifiers of their own.
    return {
      kind: 'any',
      children: children.filter((c) => c.kind !== 'allowMissing' && c.kind !== 'allowMissingOrFailed'),
      allowMissing: children.some((c) => c.kind === 'allowMissing'),
      allowFailed: children.some((c) => c.kind === 'allowMissingOrFailed'),
    };
  }
  if (r.allowMissing !== undefined) return { kind: 'allowMissing' };
  if (r.allowMissingOrFailed !== undefined) return { kind: 'allowMissingOrFailed' };
  throw new Error(`${field}: an empty requirement`);
}

function compileRuleMatch(m: Msg | undefined, field: string): (path: string) => boolean {
  if (!m) return () => true;
  refuseUnknown(m, ['prefix', 'path', 'pathSeparatedPrefix', 'safeRegex', 'pathSpecifier', 'caseSensitive'], field);
  return pathMatcher(m, field);
}

/** Compiles a JwtAuthentication; throws naming the field it cannot serve. */
export function compileJwtAuthn(config: Msg, field: string, env: JwtEnv): HttpFilter {
  refuseUnknown(config, ['providers', 'rules', 'bypassCorsPreflight', 'stripFailureResponse'], field);
  const providers = new Map<string, Provider>();
  for (const [name, p] of Object.entries(obj(config.providers) ?? {})) providers.set(name, compileProvider(name, obj(p) ?? {}, `${field}.providers[${name}]`, env));
  const rules: Rule[] = arr(config.rules).map((r, i) => {
    const m = obj(r) ?? {};
    const at = `${field}.rules[${i}]`;
    refuseUnknown(m, ['match', 'requires', 'requirementName', 'requirementType'], at);
    if (m.requirementName !== undefined) throw new Error(`${at}.requirement_name: not supported by the waypoint`);
    return { matches: compileRuleMatch(obj(m.match), `${at}.match`), ...(obj(m.requires) && { requires: compileRequirement(obj(m.requires)!, `${at}.requires`, providers) }) };
  });
  return new JwtFilter(providers, rules, config.bypassCorsPreflight === true, config.stripFailureResponse === true, istioShaped(rules));
}

/** Whether a filter is what istiod writes for RequestAuthentications (one rule for `/`, providers and allow_missing only). */
function istioShaped(rules: readonly Rule[]): boolean {
  const plain = (r: Requirement): boolean =>
    r.kind === 'provider' ? !r.audiences : r.kind === 'any' ? !r.allowFailed && r.children.every(plain) : r.kind === 'all' ? r.children.every(plain) : r.kind === 'allowMissing';
  return rules.length === 1 && rules[0]!.matches('/') && rules[0]!.requires !== undefined && plain(rules[0]!.requires);
}

/**
 * istiod's requirement over providers: one valid token of any of them, or every token valid or
 * missing (several issuers at once), or none at all.
 */
function istioRequirement(providers: readonly Provider[]): Requirement {
  const eachOrMissing: Requirement[] = providers.map((p) => ({ kind: 'any', children: [{ kind: 'provider', provider: p }], allowMissing: true, allowFailed: false }));
  if (providers.length === 1) return eachOrMissing[0]!;
  return { kind: 'any', children: [...providers.map((p): Requirement => ({ kind: 'provider', provider: p })), { kind: 'all', children: eachOrMissing }], allowMissing: false, allowFailed: false };
}

interface Found {
  token: string;
  loc: Location;
}

/** The tokens at a provider's locations (Envoy takes the JWT characters after the prefix). */
function extract(p: Provider, r: FilterRequest, query: () => URLSearchParams): Found[] {
  const out: Found[] = [];
  for (const loc of p.locations) {
    if (loc.kind === 'header') {
      const raw = r.headers[loc.name];
      const v = Array.isArray(raw) ? raw[0] : raw;
      if (typeof v !== 'string') continue;
      let rest = v;
      if (loc.prefix) {
        // Envoy compares the prefix case-insensitively for the default Bearer, exactly otherwise.
        const at = loc.name === 'authorization' && loc.prefix === 'Bearer ' ? v.toLowerCase().indexOf('bearer ') : v.indexOf(loc.prefix);
        if (at < 0) continue;
        rest = v.slice(at + loc.prefix.length);
      }
      const token = /^[A-Za-z0-9_.=+/-]*/.exec(rest.trimStart())![0];
      if (token) out.push({ token, loc });
    } else if (loc.kind === 'param') {
      const v = query().get(loc.name);
      if (v) out.push({ token: v, loc });
    } else {
      const cookies = String(r.headers.cookie ?? '');
      for (const c of cookies.split(';')) {
        const eq = c.indexOf('=');
        if (eq > 0 && c.slice(0, eq).trim() === loc.name && c.slice(eq + 1).trim()) out.push({ token: c.slice(eq + 1).trim(), loc });
      }
    }
  }
  return out;
}

interface Verified {
  provider: Provider;
  jwt: ParsedJwt;
  found: Found;
}

class JwtFilter implements HttpFilter {
  readonly name = JWT_AUTHN_FILTER;
  readonly stage = STAGE.authn;
  constructor(
    private readonly providers: ReadonlyMap<string, Provider>,
    private readonly rules: readonly Rule[],
    private readonly bypassCors: boolean,
    private readonly strip: boolean,
    private readonly istio: boolean,
  ) {}

  /**
   * The waypoint's own filter (what targets its Gateway) with a port's: as istiod, one filter
   * over the providers of both, so a token of either's issuer is known. Only for filters in
   * istiod's shape; others run one after the other.
   */
  merge(other: HttpFilter): HttpFilter | undefined {
    if (!(other instanceof JwtFilter) || !this.istio || !other.istio) return undefined;
    const providers = new Map<string, Provider>();
    for (const [side, f] of [['own', this], ['port', other]] as const) for (const p of f.providers.values()) providers.set(`${side}/${p.name}`, { ...p, name: `${side}/${p.name}` });
    const rules = [{ matches: () => true, requires: istioRequirement([...providers.values()]) }];
    return new JwtFilter(providers, rules, this.bypassCors && other.bypassCors, this.strip && other.strip, true);
  }

  async decode(r: FilterRequest): Promise<FilterReply | undefined> {
    if (this.bypassCors && r.method === 'OPTIONS' && r.headers.origin && r.headers['access-control-request-method']) return undefined;
    const rule = this.rules.find((x) => x.matches(r.path));
    if (!rule?.requires) return undefined;
    let q: URLSearchParams | undefined;
    const query = () => (q ??= new URLSearchParams(r.url.includes('?') ? r.url.slice(r.url.indexOf('?') + 1) : ''));
    const verified: Verified[] = [];
    // One verification per token and provider, whatever the requirement tree repeats.
    const memo = new Map<string, Promise<Status>>();
    const check = (p: Provider, f: Found, audiences?: string[]): Promise<Status> => {
      const key = `${p.name}\u0000${f.token}\u0000${audiences?.join(',') ?? ''}`;
      let s = memo.get(key);
      if (!s) {
        s = (async () => {
          const jwt = parseJwt(f.token);
          if (typeof jwt === 'string') return jwt;
          const st = await verifyJwt(jwt, { issuer: p.issuer, audiences: audiences ?? p.audiences, clockSkewS: p.skewS, keys: p.keys, cache: p.cache });
          if (st === 'OK' && !verified.some((v) => v.provider === p && v.found.token === f.token)) verified.push({ provider: p, jwt, found: f });
          return st;
        })();
        memo.set(key, s);
      }
      return s;
    };
    const evaluate = async (req: Requirement): Promise<Status> => {
      switch (req.kind) {
        case 'provider': {
          const found = extract(req.provider, r, query);
          if (!found.length) return STATUS.missing;
          // Every token at the provider's locations must be good (a bad one next to a good one fails).
          for (const f of found) {
            const s = await check(req.provider, f, req.audiences);
            if (s !== 'OK') return s;
          }
          return 'OK';
        }
        case 'all': {
          for (const c of req.children) {
            const s = await evaluate(c);
            if (s !== 'OK') return s;
          }
          return 'OK';
        }
        case 'any': {
          const results: Status[] = [];
          for (const c of req.children) {
            const s = await evaluate(c);
            if (s === 'OK') return 'OK';
            results.push(s);
          }
          // Envoy's aggregation: a real failure over an unknown issuer over missing.
          const final = results.find((s) => s !== STATUS.missing && s !== STATUS.unknownIssuer) ?? results.find((s) => s === STATUS.unknownIssuer) ?? STATUS.missing;
          if (req.allowFailed) return 'OK';
          if (req.allowMissing && final === STATUS.missing) return 'OK';
          return final;
        }
        case 'allowMissing':
        case 'allowMissingOrFailed': {
          // Every token any provider would read, verified by a provider of its issuer (Envoy looks it up by `iss`).
          const tokens = new Map<string, { found: Found; providers: Provider[] }>();
          for (const p of this.providers.values())
            for (const f of extract(p, r, query)) {
              const t = tokens.get(f.token);
              if (t) t.providers.push(p);
              else tokens.set(f.token, { found: f, providers: [p] });
            }
          let final: Status = 'OK';
          for (const { found, providers } of tokens.values()) {
            const jwt = parseJwt(found.token);
            const p = typeof jwt === 'string' ? undefined : providers.find((x) => !x.issuer || x.issuer === jwt.iss);
            const s = typeof jwt === 'string' ? jwt : p ? await check(p, found) : STATUS.unknownIssuer;
            if (s !== 'OK' && final === 'OK') final = s;
          }
          return req.kind === 'allowMissingOrFailed' ? 'OK' : final;
        }
      }
    };
    const status = await evaluate(rule.requires);
    if (status !== 'OK') return this.deny(status, r);
    this.output(verified, r);
    return undefined;
  }

  private output(verified: readonly Verified[], r: FilterRequest): void {
    for (const v of verified) {
      const p = v.provider;
      if (p.payloadInMetadata) r.metadata.set(JWT_AUTHN_FILTER, { ...r.metadata.get(JWT_AUTHN_FILTER), [p.payloadInMetadata]: v.jwt.payload });
      for (const c of p.claimToHeaders) {
        const value = claimValue(v.jwt.payload, c.claim);
        if (value !== undefined) r.headers[c.header] = value;
      }
      if (p.payloadHeader) r.headers[p.payloadHeader] = p.padPayloadHeader ? pad(v.jwt.payloadB64) : v.jwt.payloadB64;
    }
    // Removed after all outputs, so a header one provider writes is not lost to another's token.
    for (const v of verified) if (!v.provider.forward && v.found.loc.kind === 'header') delete r.headers[v.found.loc.name];
    const first = verified[0];
    if (!first) return;
    const payload = first.jwt.payload;
    const auth = {
      principal: `${first.jwt.iss ?? ''}/${typeof payload.sub === 'string' ? payload.sub : ''}`,
      audiences: audiencesOf(payload),
      ...(typeof payload.azp === 'string' && { presenter: payload.azp }),
      claims: payload,
    };
    r.auth = auth;
    r.metadata.set('istio_authn', {
      'request.auth.principal': auth.principal,
      'request.auth.audiences': auth.audiences,
      ...(auth.presenter !== undefined && { 'request.auth.presenter': auth.presenter }),
      'request.auth.claims': payload,
    });
  }

  private deny(status: Status, r: FilterRequest): FilterReply {
    // Envoy's realm is the request's URL (buildOriginalUri: its path and query cut at 256 characters).
    const uri = `${r.scheme}://${r.host}${r.url.slice(0, 256)}`;
    const details = `jwt_authn_access_denied{${status.replace(/\s/g, '_')}}`;
    const code = status === STATUS.audienceNotAllowed ? 403 : 401;
    if (this.strip) return { status: code, body: '', flags: '-', details };
    const challenge = `Bearer realm="${uri}"${status === STATUS.missing ? '' : ', error="invalid_token"'}`;
    return { status: code, body: status, flags: '-', details, headers: { 'www-authenticate': challenge } };
  }
}

const pad = (b64: string) => b64 + '='.repeat((4 - (b64.length % 4)) % 4);

/** A claim as Envoy writes it to a header: strings as they are, numbers and booleans as text; nested by dots. */
function claimValue(payload: Record<string, unknown>, claim: string): string | undefined {
  let v: unknown = payload[claim];
  if (v === undefined && claim.includes('.')) {
    v = payload;
    for (const k of claim.split('.')) v = obj(v)?.[k];
  }
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v.join(',');
  return undefined;
}
