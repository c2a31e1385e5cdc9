// Envoy's local rate limit filter (envoy.filters.http.local_ratelimit) as a route configures it:
// the route's typed_per_filter_config holds a LocalRateLimit (default token bucket, descriptors
// with their own buckets, headers, enforcement), and the route action's rate_limits hold the actions
// that turn a request into descriptors. A request takes a token from every descriptor bucket it
// matches (strictest first) and, when it matches none (or always_consume_default_token_bucket),
// from the default bucket; an empty bucket answers 429 "local_rate_limited" (response flag RL).
//
// A descriptor entry without a value is Envoy's wildcard: each distinct value gets its own bucket
// (Envoy Gateway's Distinct). Those buckets are what a client controls, so they are held in an LRU
// of bounded size: a flood of distinct values evicts the least recently used ones instead of
// growing memory. Buckets are keyed by the route's position and a fingerprint of its rate limit
// configuration, so they survive routing table swaps that leave the route's limit unchanged.
//
// Per source identity: Envoy's `metadata` action on Istio's `istio_authn` dynamic metadata key
// `source.principal` yields the peer's SPIFFE id, which the waypoint takes from the HBONE tunnel's
// mutual TLS (the client cannot set it). The control plane writes it for weft's
// `clientSelectors[].sourcePrincipal` (src/control/model/networking/rate-limit.ts).
import { createHash } from 'node:crypto';
import { maskedAddress, unmapV4 } from '../../util/cidr.ts';

type Msg = Record<string, unknown>;

export const LOCAL_RATE_LIMIT_FILTER = 'envoy.filters.http.local_ratelimit';
const LOCAL_RATE_LIMIT_TYPE = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';
const FILTER_CONFIG_TYPE = 'envoy.config.route.v3.FilterConfig';
/** Envoy's local reply body and details for a limited request. */
export const RATE_LIMITED_BODY = 'local_rate_limited';

/** A compiled HeaderMatcher (compile.ts makes them; the same shape as router/table.ts's). */
export interface LimitHeaderMatcher {
  name: string;
  match?: (value: string) => boolean;
  invert: boolean;
}

export interface BucketSpec {
  maxTokens: number;
  tokensPerFill: number;
  fillMs: number;
}

interface Descriptor {
  entries: { key: string; value?: string }[];
  bucket: BucketSpec;
  /** Any entry without a value: a bucket per distinct set of values. */
  dynamic: boolean;
}

/** What the actions read from a request. Header names are lower case. */
export interface LimitRequest {
  method: string;
  /** Path with query, as Envoy's `:path`. */
  url: string;
  host: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The downstream address (ip, or ip:port). */
  remoteAddress: string;
  /** The peer's SPIFFE id (from the tunnel's mutual TLS). */
  principal: string;
  /** The cluster the route chose. */
  cluster: string;
}

type Entry = { key: string; value: string };
/** An entry; null: skipped (skip_if_absent); undefined: this rate limit makes no descriptor. */
type Action = (r: LimitRequest) => Entry | null | undefined;

export interface RouteRateLimit {
  /** Names the route's buckets: its position and a fingerprint of the configuration. */
  id: string;
  status: number;
  bucket: BucketSpec;
  descriptors: Descriptor[];
  rateLimits: Action[][];
  /** Fractions in [0, 1]. */
  enabled: number;
  enforced: number;
  headers: boolean;
  alwaysConsumeDefault: boolean;
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const ms = (d: unknown): number => {
  const o = obj(d);
  return o ? Number(o.seconds ?? 0) * 1000 + Math.round(Number(o.nanos ?? 0) / 1e6) : 0;
};

/** Fails on any field outside `handled`: a field the waypoint does not act on must not be read as absent. */
function only(m: Msg, handled: string[], field: string): void {
  for (const k of Object.keys(m)) if (!handled.includes(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
}
const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function tokenBucket(v: unknown, field: string): BucketSpec {
  const b = obj(v);
  if (!b) throw new Error(`${field}: missing`);
  only(b, ['maxTokens', 'tokensPerFill', 'fillInterval'], field);
  const maxTokens = Number(b.maxTokens ?? 0);
  const perFill = obj(b.tokensPerFill);
  const tokensPerFill = perFill ? Number(perFill.value ?? 0) : 1;
  const fillMs = ms(b.fillInterval);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error(`${field}.max_tokens: must be at least 1`);
  if (!Number.isInteger(tokensPerFill) || tokensPerFill < 1) throw new Error(`${field}.tokens_per_fill: must be at least 1`);
  if (fillMs < 50) throw new Error(`${field}.fill_interval: must be at least 50ms`);
  return { maxTokens, tokensPerFill, fillMs };
}

const DENOMINATORS: Record<string, number> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 };

/** A RuntimeFractionalPercent's default (there is no runtime here); absent is 0, as Envoy reads it. */
function fraction(v: unknown, field: string): number {
  const f = obj(v);
  if (!f) return 0;
  const d = obj(f.defaultValue);
  if (!d) throw new Error(`${field}.default_value: missing`);
  const denominator = DENOMINATORS[str(d.denominator) ?? 'HUNDRED'];
  if (!denominator) throw new Error(`${field}.default_value.denominator: ${String(d.denominator)}`);
  return Math.min(1, Number(d.numerator ?? 0) / denominator);
}

function headerOf(r: LimitRequest, name: string): string | undefined {
  if (name === ':method') return r.method;
  if (name === ':path') return r.url;
  if (name === ':authority' || name === 'host') return r.host;
  const v = r.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

const hostOf = (address: string) => unmapV4(address.replace(/^\[?([^\]]*?)\]?(:\d+)?$/, '$1'));

function action(a: Msg, field: string, headerMatcher: (h: Msg, field: string) => LimitHeaderMatcher): Action {
  const which = Object.keys(a).filter((k) => a[k] !== undefined && k !== 'actionSpecifier');
  if (which.length !== 1) throw new Error(`${field}: expected one action`);
  const kind = which[0]!;
  const m = obj(a[kind]) ?? {};
  const f = `${field}.${snake(kind)}`;
  switch (kind) {
    case 'requestHeaders': {
      only(m, ['headerName', 'descriptorKey', 'skipIfAbsent'], f);
      const name = str(m.headerName)?.toLowerCase();
      const key = str(m.descriptorKey);
      if (!name) throw new Error(`${f}.header_name: empty`);
      if (!key) throw new Error(`${f}.descriptor_key: empty`);
      const skip = m.skipIfAbsent === true;
      return (r) => {
        const v = headerOf(r, name);
        return v === undefined ? (skip ? null : undefined) : { key, value: v };
      };
    }
    case 'remoteAddress':
      only(m, [], f);
      return (r) => ({ key: 'remote_address', value: hostOf(r.remoteAddress) });
    case 'maskedRemoteAddress': {
      only(m, ['v4PrefixMaskLen', 'v6PrefixMaskLen'], f);
      const v4 = obj(m.v4PrefixMaskLen) ? Number(obj(m.v4PrefixMaskLen)!.value ?? 0) : undefined;
      const v6 = obj(m.v6PrefixMaskLen) ? Number(obj(m.v6PrefixMaskLen)!.value ?? 0) : undefined;
      if ((v4 ?? 0) > 32) throw new Error(`${f}.v4_prefix_mask_len: more than 32`);
      if ((v6 ?? 0) > 128) throw new Error(`${f}.v6_prefix_mask_len: more than 128`);
      return (r) => {
        const value = maskedAddress(hostOf(r.remoteAddress), v4, v6);
        return value === undefined ? undefined : { key: 'masked_remote_address', value };
      };
    }
    case 'genericKey': {
      only(m, ['descriptorValue', 'descriptorKey'], f);
      const value = str(m.descriptorValue);
      if (!value) throw new Error(`${f}.descriptor_value: empty`);
      const entry = { key: str(m.descriptorKey) || 'generic_key', value };
      return () => entry;
    }
    case 'destinationCluster':
      only(m, [], f);
      return (r) => ({ key: 'destination_cluster', value: r.cluster });
    case 'headerValueMatch': {
      only(m, ['descriptorKey', 'descriptorValue', 'expectMatch', 'headers'], f);
      const value = str(m.descriptorValue);
      if (!value) throw new Error(`${f}.descriptor_value: empty`);
      const entry = { key: str(m.descriptorKey) || 'header_match', value };
      // A BoolValue false decodes as {} (defaults are left out): present and not true is false.
      const expect = m.expectMatch === undefined || obj(m.expectMatch)?.value === true;
      const headers = arr(m.headers).map((h, i) => headerMatcher(h, `${f}.headers[${i}]`));
      if (!headers.length) throw new Error(`${f}.headers: empty`);
      return (r) => {
        const all = headers.every((h) => {
          const v = headerOf(r, h.name);
          return (v !== undefined && (!h.match || h.match(v))) !== h.invert;
        });
        return all === expect ? entry : undefined;
      };
    }
    case 'metadata':
    case 'dynamicMetadata': {
      only(m, ['descriptorKey', 'metadataKey', 'defaultValue', 'source', 'skipIfAbsent'], f);
      const key = str(m.descriptorKey);
      if (!key) throw new Error(`${f}.descriptor_key: empty`);
      const mk = obj(m.metadataKey);
      const path = arr(mk?.path).map((p) => str(p.key));
      // The one piece of dynamic metadata the waypoint has: Istio's authenticated peer.
      if (str(mk?.key) !== 'istio_authn' || path.length !== 1 || path[0] !== 'source.principal' || (str(m.source) ?? 'DYNAMIC') !== 'DYNAMIC')
        throw new Error(`${f}.metadata_key: only the dynamic istio_authn source.principal is known to the waypoint`);
      const fallback = str(m.defaultValue);
      const skip = m.skipIfAbsent === true;
      return (r) => (r.principal ? { key, value: r.principal } : fallback ? { key, value: fallback } : skip ? null : undefined);
    }
    default:
      throw new Error(`${f}: not supported by the waypoint`);
  }
}

/**
 * The route's local rate limit: the filter config (an Any) and the route action's rate_limits,
 * checked whole. `id` names the route's position; undefined when a FilterConfig disables the filter.
 */
export function compileRouteRateLimit(
  anyConfig: unknown,
  rateLimits: unknown,
  field: string,
  id: string,
  decode: (typeUrl: string, body: Uint8Array) => Msg,
  headerMatcher: (h: Msg, field: string) => LimitHeaderMatcher,
): RouteRateLimit | undefined {
  const f = `${field}.typed_per_filter_config[${LOCAL_RATE_LIMIT_FILTER}]`;
  let a = obj(anyConfig);
  let typeUrl = str(a?.typeUrl) ?? str(a?.type_url) ?? '';
  // A FilterConfig wrapper (is_optional for clients without the filter): the waypoint has it, so it applies.
  if (typeUrl.endsWith(`/${FILTER_CONFIG_TYPE}`)) {
    let w: Msg;
    try {
      w = decode(typeUrl, (a!.value as Uint8Array | undefined) ?? new Uint8Array());
    } catch (e) {
      throw new Error(`${f}: FilterConfig does not decode: ${(e as Error).message}`, { cause: e });
    }
    if (w.disabled === true) return undefined; // the route turns the filter off: no limit, as written
    a = obj(w.config);
    typeUrl = str(a?.typeUrl) ?? str(a?.type_url) ?? '';
  }
  if (!typeUrl.endsWith(`/${LOCAL_RATE_LIMIT_TYPE}`)) throw new Error(`${f}: is ${typeUrl || 'empty'}, not a LocalRateLimit`);
  let m: Msg;
  try {
    m = decode(typeUrl, (a!.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${f}: does not decode: ${(e as Error).message}`, { cause: e });
  }
  only(m, ['statPrefix', 'status', 'tokenBucket', 'filterEnabled', 'filterEnforced', 'descriptors', 'stage', 'localRateLimitPerDownstreamConnection', 'enableXRatelimitHeaders', 'vhRateLimits', 'alwaysConsumeDefaultTokenBucket', 'rateLimitedAsResourceExhausted'], f);
  if (!str(m.statPrefix)) throw new Error(`${f}.stat_prefix: empty`);
  if (m.localRateLimitPerDownstreamConnection === true) throw new Error(`${f}.local_rate_limit_per_downstream_connection: not supported by the waypoint (buckets are per route)`);
  const code = Number(obj(m.status)?.code ?? 0);
  const stage = Number(m.stage ?? 0);
  const headersMode = str(m.enableXRatelimitHeaders) ?? 'OFF';
  if (headersMode !== 'OFF' && headersMode !== 'DRAFT_VERSION_03') throw new Error(`${f}.enable_x_ratelimit_headers: ${headersMode}`);
  const descriptors: Descriptor[] = arr(m.descriptors).map((d, i) => {
    const df = `${f}.descriptors[${i}]`;
    only(d, ['entries', 'tokenBucket'], df);
    const entries = arr(d.entries).map((e, j) => {
      const key = str(e.key);
      if (!key) throw new Error(`${df}.entries[${j}].key: empty`);
      return { key, value: str(e.value) || undefined };
    });
    if (!entries.length) throw new Error(`${df}.entries: empty`);
    return { entries, bucket: tokenBucket(d.tokenBucket, `${df}.token_bucket`), dynamic: entries.some((e) => e.value === undefined) };
  });
  const bucket = tokenBucket(m.tokenBucket, `${f}.token_bucket`);
  // Envoy refills every descriptor on the default bucket's timer: their intervals must be multiples of it.
  descriptors.forEach((d, i) => {
    if (d.bucket.fillMs % bucket.fillMs !== 0) throw new Error(`${f}.descriptors[${i}].token_bucket.fill_interval: not a multiple of the default token bucket's`);
  });
  const actions = arr(rateLimits)
    .map((rl, i) => ({ rl, rf: `${field}.route.rate_limits[${i}]` }))
    .filter(({ rl, rf }) => {
      only(rl, ['stage', 'disableKey', 'actions'], rf);
      return Number(rl.stage ?? 0) === stage;
    })
    .map(({ rl, rf }) => {
      const list = arr(rl.actions).map((x, j) => action(x, `${rf}.actions[${j}]`, headerMatcher));
      if (!list.length) throw new Error(`${rf}.actions: empty`);
      return list;
    });
  const fingerprint = createHash('sha256').update(JSON.stringify([m, rateLimits])).digest('base64url').slice(0, 16);
  return {
    id: `${id}|${fingerprint}`,
    status: code >= 400 ? code : 429,
    bucket,
    descriptors,
    rateLimits: actions,
    enabled: fraction(m.filterEnabled, `${f}.filter_enabled`),
    enforced: fraction(m.filterEnforced, `${f}.filter_enforced`),
    headers: headersMode === 'DRAFT_VERSION_03',
    alwaysConsumeDefault: m.alwaysConsumeDefaultTokenBucket === undefined || obj(m.alwaysConsumeDefaultTokenBucket)?.value === true,
  };
}

/** The values of a wildcard descriptor as a bucket key: long ones by digest, so a bucket costs little whatever a client sends. */
function valuesKey(entries: Entry[]): string {
  const joined = entries.map((e) => e.value).join('\0');
  return joined.length <= 64 ? `=${joined}` : `#${createHash('sha256').update(joined).digest('base64url')}`;
}

interface BucketState {
  tokens: number;
  /** When it was last filled (ms, monotonic). */
  filled: number;
}

export interface RateLimiterOptions {
  /** At most this many buckets for wildcard descriptors (distinct values); the least recently used go first. Default 10000, as Envoy Gateway's max_dynamic_descriptors. */
  maxDynamicBuckets?: number;
  /** At most this many fixed buckets (defaults and exact descriptors: bounded by configuration, kept across swaps). Default 100000. */
  maxFixedBuckets?: number;
  now?: () => number;
  random?: () => number;
}

export interface LimitDecision {
  limited: boolean;
  /** x-ratelimit-* for the response, when the filter writes them. */
  headers?: Record<string, string>;
}

/** The waypoint's buckets, across every route and routing table. */
export class RateLimiter {
  private readonly fixed = new Map<string, BucketState>();
  private readonly dynamic = new Map<string, BucketState>();
  private readonly maxDynamic: number;
  private readonly maxFixed: number;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(o: RateLimiterOptions = {}) {
    this.maxDynamic = o.maxDynamicBuckets ?? 10_000;
    this.maxFixed = o.maxFixedBuckets ?? 100_000;
    this.now = o.now ?? (() => performance.now());
    this.random = o.random ?? Math.random;
  }

  stats(): { fixedBuckets: number; dynamicBuckets: number } {
    return { fixedBuckets: this.fixed.size, dynamicBuckets: this.dynamic.size };
  }

  /** Takes the request's tokens; `limited` when a bucket it needs is empty and the limit is enforced. */
  check(rl: RouteRateLimit, r: LimitRequest): LimitDecision {
    if (!(this.random() < rl.enabled)) return { limited: false };
    const now = this.now();
    const buckets: { key: string; spec: BucketSpec; dynamic: boolean }[] = [];
    for (const actions of rl.rateLimits) {
      const entries: Entry[] = [];
      let made = true;
      for (const a of actions) {
        const e = a(r);
        if (e === undefined) {
          made = false;
          break;
        }
        if (e) entries.push(e);
      }
      if (!made || !entries.length) continue;
      const i = rl.descriptors.findIndex((d) => d.entries.length === entries.length && d.entries.every((de, k) => de.key === entries[k]!.key && (de.value === undefined || de.value === entries[k]!.value)));
      if (i < 0) continue;
      const d = rl.descriptors[i]!;
      const values = d.dynamic ? `\0${valuesKey(entries)}` : '';
      buckets.push({ key: `${rl.id}\0${i}${values}`, spec: d.bucket, dynamic: d.dynamic });
    }
    // Strictest first, as Envoy orders matched descriptors; the default bucket last.
    buckets.sort((a, b) => a.spec.tokensPerFill / a.spec.fillMs - b.spec.tokensPerFill / b.spec.fillMs);
    if (!buckets.length || rl.alwaysConsumeDefault) buckets.push({ key: `${rl.id}\0default`, spec: rl.bucket, dynamic: false });
    let shown: { spec: BucketSpec; state: BucketState } | undefined;
    let limited = false;
    for (const b of buckets) {
      const state = this.bucket(b.key, b.spec, b.dynamic, now);
      shown ??= { spec: b.spec, state };
      if (state.tokens < 1) {
        limited = true;
        shown = { spec: b.spec, state };
        break;
      }
      state.tokens--;
    }
    const enforced = limited && this.random() < rl.enforced;
    if (!rl.headers || !shown) return { limited: enforced };
    const reset = Math.max(0, Math.ceil((shown.state.filled + shown.spec.fillMs - now) / 1000));
    return {
      limited: enforced,
      headers: { 'x-ratelimit-limit': String(shown.spec.maxTokens), 'x-ratelimit-remaining': String(Math.floor(shown.state.tokens)), 'x-ratelimit-reset': String(reset) },
    };
  }

  /** The bucket for `key`, refilled for the time passed, as the most recently used. */
  private bucket(key: string, spec: BucketSpec, dynamic: boolean, now: number): BucketState {
    const map = dynamic ? this.dynamic : this.fixed;
    let s = map.get(key);
    if (s) {
      map.delete(key);
      const fills = Math.floor((now - s.filled) / spec.fillMs);
      if (fills > 0) {
        s.tokens = Math.min(spec.maxTokens, s.tokens + fills * spec.tokensPerFill);
        s.filled += fills * spec.fillMs;
      }
    } else {
      s = { tokens: spec.maxTokens, filled: now };
      const max = dynamic ? this.maxDynamic : this.maxFixed;
      while (map.size >= max) map.delete(map.keys().next().value!);
    }
    map.set(key, s);
    return s;
  }
}
