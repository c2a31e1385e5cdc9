// A route's local rate limit (model: rate-limit.ts) as Envoy Gateway writes it: the route's
// typed_per_filter_config["envoy.filters.http.local_ratelimit"] holds the default token bucket
// (the rule without selectors, else effectively unlimited) and one descriptor per rule with its
// own bucket; the route action's rate_limits hold the actions that make each rule's descriptor
// from the request. Descriptor entries with no value are Envoy's wildcard (each distinct value its
// own bucket: Distinct). Only requests that match no descriptor take from the default bucket.
// The config is wrapped in an optional FilterConfig, and the listener carries the filter as an
// optional one (listeners.ts), so proxyless gRPC clients ignore what they cannot do.
import type { LocalRateLimitPolicy, RateLimitSelector, RateLimitValue } from '../../model/networking/rate-limit.ts';
import type { StringMatch } from '../../model/networking/routes.ts';
import { any, duration } from './messages.ts';

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
export const LOCAL_RATE_LIMIT_TYPE = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';
/** Istio's authentication metadata, where the peer's principal is (Envoy's `metadata` action reads it). */
export const AUTHN_METADATA = { key: 'istio_authn', path: [{ key: 'source.principal' }] };
export const PRINCIPAL_KEY = 'source.principal';

/** The listener's filter: inert until a route configures it. */
export const localRateLimitFilter = () => ({ name: LOCAL_RATE_LIMIT_FILTER, typedConfig: any(LOCAL_RATE_LIMIT_TYPE, { statPrefix: 'http_local_rate_limiter' }), isOptional: true });

const UNLIMITED: RateLimitValue = { requests: 0xffffffff, intervalMs: 1000 };
const ALL = { defaultValue: { numerator: 100, denominator: 'HUNDRED' } };

const bucket = (v: RateLimitValue) => ({ maxTokens: v.requests, tokensPerFill: { value: v.requests }, fillInterval: duration(v.intervalMs) });

const stringMatcher = (s: StringMatch) => ('exact' in s ? { exact: s.exact } : 'prefix' in s ? { prefix: s.prefix } : { safeRegex: { regex: s.regex } });

type Entry = { key: string; value?: string };

/** One selector -> the actions that produce its descriptor entries, and those entries as configured. */
function selectorParts(s: RateLimitSelector, rule: number, i: number): { actions: object[]; entries: Entry[] } {
  const key = `rule-${rule}-match-${i}`;
  const valueMatch = (name: string, match: object, invert: boolean) => ({
    actions: [{ headerValueMatch: { descriptorKey: key, descriptorValue: key, expectMatch: { value: !invert }, headers: [{ name, ...match }] } }],
    entries: [{ key, value: key }],
  });
  switch (s.type) {
    case 'header':
      return valueMatch(s.name, { stringMatch: stringMatcher(s.value) }, s.invert);
    case 'distinctHeader':
      return { actions: [{ requestHeaders: { headerName: s.name, descriptorKey: key } }], entries: [{ key }] };
    case 'method':
      return valueMatch(':method', { stringMatch: { safeRegex: { regex: s.methods.join('|') } } }, false);
    case 'path':
      return valueMatch(':path', { stringMatch: stringMatcher(s.value) }, s.invert);
    case 'sourceCIDR': {
      const mask = { [s.v6 ? 'v6PrefixMaskLen' : 'v4PrefixMaskLen']: { value: s.prefixLen } };
      const actions: object[] = [{ maskedRemoteAddress: mask }];
      const entries: Entry[] = [{ key: 'masked_remote_address', value: `${s.network}/${s.prefixLen}` }];
      if (s.distinct) {
        actions.push({ remoteAddress: {} });
        entries.push({ key: 'remote_address' });
      }
      return { actions, entries };
    }
    case 'sourcePrincipal':
      return { actions: [{ metadata: { descriptorKey: PRINCIPAL_KEY, metadataKey: AUTHN_METADATA, source: 'DYNAMIC' } }], entries: [{ key: PRINCIPAL_KEY, value: s.value }] };
  }
}

/** The per-route filter config and the route action's rate_limits. */
export function buildLocalRateLimit(p: LocalRateLimitPolicy): { filter: Record<string, unknown>; rateLimits: object[] } {
  const rateLimits: object[] = [];
  const descriptors: object[] = [];
  p.rules.forEach((rule, r) => {
    const parts = rule.selectors.map((s, i) => selectorParts(s, r, i));
    rateLimits.push({ actions: parts.flatMap((x) => x.actions) });
    descriptors.push({ entries: parts.flatMap((x) => x.entries), tokenBucket: bucket(rule.limit) });
  });
  const config = any(LOCAL_RATE_LIMIT_TYPE, {
    statPrefix: 'http_local_rate_limiter',
    tokenBucket: bucket(p.default ?? UNLIMITED),
    filterEnabled: ALL,
    filterEnforced: ALL,
    descriptors,
    enableXRatelimitHeaders: 'DRAFT_VERSION_03',
    alwaysConsumeDefaultTokenBucket: { value: false },
    localRateLimitPerDownstreamConnection: false,
  });
  // Optional: proxyless gRPC clients, which have no such filter, skip it instead of refusing the routes.
  return { filter: any('envoy.config.route.v3.FilterConfig', { config, isOptional: true }), rateLimits };
}
