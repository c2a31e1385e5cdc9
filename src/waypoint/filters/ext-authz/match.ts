// The matchers ext_authz's config uses: Envoy's StringMatcher and ListStringMatcher (which headers
// go to and come from the authorizer) and MetadataMatcher (filter_enabled_metadata: Istio enables
// the authorizer only for requests its CUSTOM policy's rules matched, through the RBAC shadow
// engine's dynamic metadata). Anything else in them is refused: a matcher read wrongly would call
// the authorizer too rarely (fail open) or leak headers.
import { MAX_REGEX, regexProblem } from '../../../util/regex-guard.ts';
import type { Msg } from '../../xds/envoy.ts';

export type Matcher = (value: string) => boolean;

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);

/** Envoy's StringMatcher (exact, prefix, suffix, contains, safe_regex; ignore_case). */
export function stringMatcher(m: Msg, field: string): Matcher {
  const ic = m.ignoreCase === true;
  const norm = (s: string) => (ic ? s.toLowerCase() : s);
  for (const kind of ['exact', 'prefix', 'suffix', 'contains'] as const) {
    if (typeof m[kind] !== 'string') continue;
    const want = norm(m[kind]);
    if (kind === 'exact') return (v) => norm(v) === want;
    if (kind === 'prefix') return (v) => norm(v).startsWith(want);
    if (kind === 'suffix') return (v) => norm(v).endsWith(want);
    return (v) => norm(v).includes(want);
  }
  const re = obj(m.safeRegex)?.regex;
  if (typeof re === 'string' && re) {
    if (re.length > MAX_REGEX) throw new Error(`${field}.safe_regex: longer than ${MAX_REGEX} characters`);
    const why = regexProblem(re);
    if (why) throw new Error(`${field}.safe_regex: refused: ${why}`);
    let compiled: RegExp;
    try {
      compiled = new RegExp(`^(?:${re})$`, ic ? 'i' : '');
    } catch (e) {
      throw new Error(`${field}.safe_regex: ${(e as Error).message}`, { cause: e });
    }
    return (v) => compiled.test(v);
  }
  throw new Error(`${field}: no match_pattern the waypoint supports (exact, prefix, suffix, contains, safe_regex)`);
}

/** Envoy's ListStringMatcher: any pattern matches. Undefined when the list is absent (callers' defaults differ). */
export function listMatcher(m: unknown, field: string): Matcher | undefined {
  const list = obj(m);
  if (!list) return undefined;
  const patterns = (Array.isArray(list.patterns) ? (list.patterns as Msg[]) : []).map((p, i) => stringMatcher(p, `${field}.patterns[${i}]`));
  return (v) => patterns.some((p) => p(v));
}

/** Envoy's MetadataMatcher over the request's dynamic metadata: a filter namespace, a path of keys, a value matcher. */
export function metadataMatcher(m: Msg, field: string): (metadata: ReadonlyMap<string, Record<string, unknown>>) => boolean {
  const filter = typeof m.filter === 'string' ? m.filter : '';
  if (!filter) throw new Error(`${field}.filter: empty`);
  const path = (Array.isArray(m.path) ? (m.path as Msg[]) : []).map((seg, i) => {
    if (typeof seg.key !== 'string') throw new Error(`${field}.path[${i}]: only key segments are supported`);
    return seg.key;
  });
  if (!path.length) throw new Error(`${field}.path: empty`);
  const value = valueMatcher(obj(m.value) ?? {}, `${field}.value`);
  const invert = m.invert === true;
  return (metadata) => {
    let v: unknown = metadata.get(filter);
    for (const k of path) v = obj(v)?.[k];
    return value(v) !== invert;
  };
}

function valueMatcher(m: Msg, field: string): (v: unknown) => boolean {
  if (obj(m.stringMatch)) {
    const s = stringMatcher(obj(m.stringMatch)!, `${field}.string_match`);
    return (v) => typeof v === 'string' && s(v);
  }
  if (typeof m.boolMatch === 'boolean') {
    const want = m.boolMatch;
    return (v) => v === want;
  }
  if (m.presentMatch === true) return (v) => v !== undefined && v !== null;
  throw new Error(`${field}: only string_match, bool_match and present_match are supported`);
}
