// RequestAuthentication (security.istio.io v1, v1beta1) attached to a waypoint target -> the
// `envoy.filters.http.jwt_authn` filter (a JwtAuthentication), as istiod writes it: one provider
// `origins-<i>` per jwtRule of all the attached policies (oldest policy first), its payload in
// metadata under the issuer, and one rule for `/` whose requirement is any provider's valid token,
// or every token valid or missing, so a request without a token passes (the policies decide) and
// one with an invalid token is refused (401).
//
// `jwksUri` is fetched by the waypoint (remote_jwks) from the mesh service its host names, through
// the cluster `outbound|<port>||<host>`, over HTTPS only. Whatever cannot be translated is a
// problem naming the object and field, and fails closed: a rule whose keys are unusable keeps its
// issuer with an empty key set (every token of that issuer is refused), a rule without an issuer
// is left out (its tokens then have an issuer no provider knows: refused too).
import type { KObject } from '../../../kube/objects.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import { parseDuration } from '../../model/networking/common.ts';
import { any, duration } from './messages.ts';
import { clusterName } from './names.ts';

export const JWT_AUTHN_FILTER = 'envoy.filters.http.jwt_authn';
const JWT_AUTHN = 'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';
const VERSIONS = ['security.istio.io/v1', 'security.istio.io/v1beta1'];

/** istiod's defaults for remote JWKS: the fetch timeout (RequestAuthentication's `timeout`) and the cache. */
const JWKS_TIMEOUT_MS = 5000;
const JWKS_CACHE_MS = 5 * 60_000;
/** A key set that matches no token: what a rule gets whose keys cannot be had. */
export const NO_KEYS = '{"keys":[]}';

const SPEC_FIELDS = ['selector', 'targetRef', 'targetRefs', 'jwtRules'];
const RULE_FIELDS = ['issuer', 'audiences', 'jwksUri', 'jwks', 'fromHeaders', 'fromParams', 'fromCookies', 'outputPayloadToHeader', 'outputClaimToHeaders', 'forwardOriginalToken', 'timeout'];
const HEADER = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** What the translation reads of listener-extras.ts's AttachContext (imported there, so not imported here). */
export interface JwtContext {
  problems: NetworkingProblem[];
  knownHosts?: ReadonlyMap<string, readonly number[]>;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A service host and its ports, as the uri's host names it (a short `name.namespace` is completed). */
export function resolveJwksHost(host: string, known: ReadonlyMap<string, readonly number[]> | undefined): { host: string; ports: readonly number[] } | undefined {
  if (!known) return undefined;
  const exact = known.get(host);
  if (exact) return { host, ports: exact };
  for (const [h, ports] of known) if (h.startsWith(`${host}.svc.`)) return { host: h, ports };
  return undefined;
}

interface Translated {
  issuer: string;
  provider: Record<string, unknown>;
}

function translateRule(obj: KObject, rule: unknown, field: string, ctx: JwtContext): Translated {
  const at = (f: string, reason: string) => ctx.problems.push({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field: f, reason });
  // A rule without an issuer becomes a provider of any issuer with no keys: any token no other
  // provider verifies is refused (what the rule meant to check cannot be known).
  const catchAll = { issuer: '', provider: { localJwks: { inlineString: NO_KEYS } } };
  if (!isObj(rule)) {
    at(field, 'expected an object: every token no other rule verifies is refused');
    return catchAll;
  }
  for (const k of Object.keys(rule)) if (!RULE_FIELDS.includes(k)) at(`${field}.${k}`, 'unknown field: not translated');
  const issuer = typeof rule.issuer === 'string' ? rule.issuer : '';
  if (!issuer) {
    at(`${field}.issuer`, 'required: every token no other rule verifies is refused');
    return catchAll;
  }
  // Fields that cannot be honoured keep the provider but with no keys: its tokens are refused.
  let usable = true;
  const bad = (f: string, reason: string) => {
    usable = false;
    at(`${field}.${f}`, `${reason}: tokens of issuer ${JSON.stringify(issuer)} are refused`);
  };
  const strings = (v: unknown, f: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x)) {
      bad(f, 'expected a list of non-empty strings');
      return [];
    }
    return v as string[];
  };
  const provider: Record<string, unknown> = { issuer, payloadInMetadata: issuer };
  const audiences = strings(rule.audiences, 'audiences');
  if (audiences.length) provider.audiences = audiences;

  let timeoutMs = JWKS_TIMEOUT_MS;
  if (rule.timeout !== undefined) {
    const t = typeof rule.timeout === 'string' ? parseDuration(rule.timeout) : undefined;
    if (t === undefined || t <= 0) bad('timeout', `${JSON.stringify(rule.timeout)} is not a positive duration`);
    else timeoutMs = t;
  }
  let keys: Record<string, unknown> | undefined;
  if (rule.jwks !== undefined) {
    if (rule.jwksUri !== undefined) at(`${field}.jwksUri`, 'both jwks and jwksUri: the inline jwks is used');
    const ok = typeof rule.jwks === 'string' && (() => {
      try {
        const doc = JSON.parse(rule.jwks as string) as unknown;
        return isObj(doc) && Array.isArray(doc.keys);
      } catch {
        return false;
      }
    })();
    if (!ok) bad('jwks', 'not a JSON Web Key Set (a JSON object with a keys list)');
    else keys = { localJwks: { inlineString: rule.jwks } };
  } else if (rule.jwksUri !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(String(rule.jwksUri));
    } catch {
      bad('jwksUri', `${JSON.stringify(rule.jwksUri)} is not a URL`);
    }
    if (url && url.protocol !== 'https:') bad('jwksUri', 'only https is supported (keys fetched in the clear could be anyone\'s)');
    else if (url) {
      const port = url.port ? Number(url.port) : 443;
      const svc = resolveJwksHost(url.hostname, ctx.knownHosts);
      if (!svc) bad('jwksUri', `${url.hostname} is not a service of the mesh (the waypoint fetches keys only from mesh services)`);
      else if (!svc.ports.includes(port)) bad('jwksUri', `service ${svc.host} has no port ${port}`);
      else keys = { remoteJwks: { httpUri: { uri: url.href, cluster: clusterName(svc.host, port), timeout: duration(timeoutMs) }, cacheDuration: duration(JWKS_CACHE_MS) } };
    }
  } else bad('jwksUri', 'neither jwks nor jwksUri (OpenID discovery from the issuer is not supported)');

  const fromHeaders: Record<string, unknown>[] = [];
  if (rule.fromHeaders !== undefined) {
    if (!Array.isArray(rule.fromHeaders)) bad('fromHeaders', 'expected a list');
    else
      rule.fromHeaders.forEach((h, i) => {
        if (!isObj(h) || typeof h.name !== 'string' || !HEADER.test(h.name)) return bad(`fromHeaders[${i}].name`, 'not a header name');
        if (h.prefix !== undefined && typeof h.prefix !== 'string') return bad(`fromHeaders[${i}].prefix`, 'expected a string');
        fromHeaders.push({ name: h.name, ...(h.prefix && { valuePrefix: h.prefix }) });
      });
  }
  if (fromHeaders.length) provider.fromHeaders = fromHeaders;
  const fromParams = strings(rule.fromParams, 'fromParams');
  if (fromParams.length) provider.fromParams = fromParams;
  const fromCookies = strings(rule.fromCookies, 'fromCookies');
  if (fromCookies.length) provider.fromCookies = fromCookies;
  if (rule.forwardOriginalToken !== undefined && typeof rule.forwardOriginalToken !== 'boolean') bad('forwardOriginalToken', 'expected a boolean');
  if (rule.forwardOriginalToken === true) provider.forward = true;
  if (rule.outputPayloadToHeader !== undefined) {
    if (typeof rule.outputPayloadToHeader !== 'string' || !HEADER.test(rule.outputPayloadToHeader)) bad('outputPayloadToHeader', 'not a header name');
    else provider.forwardPayloadHeader = rule.outputPayloadToHeader;
  }
  if (rule.outputClaimToHeaders !== undefined) {
    if (!Array.isArray(rule.outputClaimToHeaders)) bad('outputClaimToHeaders', 'expected a list');
    else {
      const claims: Record<string, unknown>[] = [];
      rule.outputClaimToHeaders.forEach((c, i) => {
        if (!isObj(c) || typeof c.header !== 'string' || !HEADER.test(c.header)) return bad(`outputClaimToHeaders[${i}].header`, 'not a header name');
        if (typeof c.claim !== 'string' || !c.claim) return bad(`outputClaimToHeaders[${i}].claim`, 'required');
        claims.push({ headerName: c.header, claimName: c.claim });
      });
      if (claims.length) provider.claimToHeaders = claims;
    }
  }
  // Fail closed: the issuer stays known, with keys that verify nothing.
  Object.assign(provider, usable && keys ? keys : { localJwks: { inlineString: NO_KEYS } });
  return { issuer, provider };
}

const created = (o: KObject) => String((o.metadata as { creationTimestamp?: unknown }).creationTimestamp ?? '');

/** The JwtAuthentication for the jwtRules of the attached RequestAuthentications, or undefined when there are none. */
export function jwtAuthentication(attached: readonly KObject[], ctx: JwtContext): Record<string, unknown> | undefined {
  const policies = attached.filter((o) => o.kind === 'RequestAuthentication')
    .sort((a, b) => created(a).localeCompare(created(b)) || (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  const providers: Translated[] = [];
  const seen = new Map<string, string>();
  for (const o of policies) {
    const at = (f: string, reason: string) => ctx.problems.push({ kind: o.kind, namespace: o.metadata.namespace ?? '', name: o.metadata.name, field: f, reason } satisfies NetworkingProblem);
    if (!VERSIONS.includes(o.apiVersion)) at('apiVersion', `${o.apiVersion} is not ${VERSIONS.join(' or ')}: translated as v1`);
    const spec = (o as { spec?: unknown }).spec;
    if (!isObj(spec)) continue;
    for (const k of Object.keys(spec)) if (!SPEC_FIELDS.includes(k)) at(`spec.${k}`, 'unknown field: not translated');
    if (spec.selector !== undefined) at('spec.selector', 'ignored: a policy with targetRefs applies to its targets only');
    if (spec.jwtRules === undefined) continue;
    if (!Array.isArray(spec.jwtRules)) {
      at('spec.jwtRules', 'expected a list: every token no other rule verifies is refused');
      if (!seen.has('')) providers.push({ issuer: '', provider: { localJwks: { inlineString: NO_KEYS } } });
      seen.set('', `${o.metadata.namespace}/${o.metadata.name} spec.jwtRules`);
      continue;
    }
    spec.jwtRules.forEach((r, i) => {
      const field = `spec.jwtRules[${i}]`;
      const t = translateRule(o, r, field, ctx);
      const first = seen.get(t.issuer);
      if (first !== undefined && !t.issuer) return;
      // Two providers of one issuer would leave which one verifies to chance: the first is kept.
      if (first !== undefined) return at(`${field}.issuer`, `issuer ${JSON.stringify(t.issuer)} is already configured by ${first}: this rule is left out`);
      seen.set(t.issuer, `${o.metadata.namespace}/${o.metadata.name} ${field}`);
      providers.push(t);
    });
  }
  if (!providers.length) return undefined;
  const names = providers.map((_, i) => `origins-${i}`);
  const orMissing = names.map((n) => ({ requiresAny: { requirements: [{ providerName: n }, { allowMissing: {} }] } }));
  const requires = names.length === 1 ? orMissing[0] : { requiresAny: { requirements: [...names.map((n) => ({ providerName: n })), { requiresAll: { requirements: orMissing } }] } };
  return {
    providers: Object.fromEntries(providers.map((p, i) => [names[i], p.provider])),
    rules: [{ match: { prefix: '/' }, requires }],
    bypassCorsPreflight: true,
  };
}

/** The jwt_authn HTTP filter (first in Istio's order). */
export function requestAuthenticationContributor(attached: readonly KObject[], ctx: JwtContext): { httpFilters: { name: string; typedConfig: unknown }[] } | undefined {
  const config = jwtAuthentication(attached, ctx);
  if (!config) return undefined;
  return { httpFilters: [{ name: JWT_AUTHN_FILTER, typedConfig: any(JWT_AUTHN, config) }] };
}
