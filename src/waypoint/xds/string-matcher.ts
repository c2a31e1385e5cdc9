// Envoy's StringMatcher and safe_regex as the waypoint compiles them (routes, RBAC, JWT...): one
// place, below both the resource compiler (compile.ts) and the filters, so filters can use it
// without importing the compiler that imports them.
import { regexProblem } from '../../util/regex-guard.ts';
import type { Matcher } from '../router/table.ts';
import type { Msg } from './envoy.ts';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Regexes are JavaScript's, not RE2: bounded in size so one resource cannot hand us a huge program. */
const MAX_REGEX = 1024;

export function regex(source: unknown, field: string, flags = ''): RegExp {
  const s = str(source);
  if (s === undefined || s === '') throw new Error(`${field}: empty regex`);
  if (s.length > MAX_REGEX) throw new Error(`${field}: regex longer than ${MAX_REGEX} characters`);
  const why = regexProblem(s);
  if (why) throw new Error(`${field}: regex refused: ${why}`);
  try {
    return new RegExp(`^(?:${s})$`, flags); // RE2 full-match semantics, as Envoy's safe_regex
  } catch (e) {
    throw new Error(`${field}: ${(e as Error).message}`, { cause: e });
  }
}

/** Envoy's StringMatcher. */
export function stringMatcher(m: Msg, field: string): Matcher {
  const ic = m.ignoreCase === true;
  const norm = (s: string) => (ic ? s.toLowerCase() : s);
  if (typeof m.exact === 'string') {
    const want = norm(m.exact);
    return (v) => norm(v) === want;
  }
  if (typeof m.prefix === 'string') {
    const want = norm(m.prefix);
    return (v) => norm(v).startsWith(want);
  }
  if (typeof m.suffix === 'string') {
    const want = norm(m.suffix);
    return (v) => norm(v).endsWith(want);
  }
  if (typeof m.contains === 'string') {
    const want = norm(m.contains);
    return (v) => norm(v).includes(want);
  }
  if (obj(m.safeRegex)) {
    const re = regex(obj(m.safeRegex)!.regex, `${field}.safe_regex`, ic ? 'i' : '');
    return (v) => re.test(v);
  }
  throw new Error(`${field}: no match_pattern the waypoint supports`);
}

/** A RouteMatch's path specifier (routes, and the JWT filter's rules): prefix, path, path_separated_prefix or safe_regex. */
export function pathMatcher(m: Msg, field: string): Matcher {
  // A BoolValue false decodes as {} (defaults are left out): present and not true is false.
  const cs = m.caseSensitive === undefined || obj(m.caseSensitive)?.value === true;
  const norm = (s: string) => (cs ? s : s.toLowerCase());
  if (typeof m.prefix === 'string') {
    const want = norm(m.prefix);
    return (p) => norm(p).startsWith(want);
  }
  if (typeof m.path === 'string') {
    const want = norm(m.path);
    return (p) => norm(p) === want;
  }
  if (typeof m.pathSeparatedPrefix === 'string') {
    const want = norm(m.pathSeparatedPrefix);
    return (p) => {
      const n = norm(p);
      return n === want || n.startsWith(`${want}/`);
    };
  }
  if (obj(m.safeRegex)) {
    const re = regex(obj(m.safeRegex)!.regex, `${field}.safe_regex`, cs ? '' : 'i');
    return (p) => re.test(p);
  }
  throw new Error(`${field}: no path specifier the waypoint supports (prefix, path, path_separated_prefix, safe_regex)`);
}
