// The Envoy matchers an AuthorizationPolicy value becomes, as istiod writes them for a waypoint
// (pilot/pkg/security/authz/matcher and model/generator.go): plain objects in the camelCase form
// protobufjs encodes (envoy.config.rbac.v3 Permission/Principal, envoy.type.matcher.v3 matchers).
//
// Istio's value syntax everywhere: "*" is presence (a header's present_match, else the regex ".+"),
// "*x" a suffix, "x*" a prefix, anything else exact. Every literal that lands in a regex is escaped,
// so a value is always data, never a pattern.
import type { IpBlock } from '../../../api/mesh.ts';

export type Json = Record<string, unknown>;

/** Escapes RE2 (and ECMAScript) metacharacters, as Go's regexp.QuoteMeta. */
export const quoteMeta = (s: string) => s.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');

export const regex = (r: string): Json => ({ safeRegex: { regex: r } });

/** Istio's StringMatcher(v) with an optional literal prefix (StringMatcherWithPrefix). */
export function stringMatcher(v: string, prefix = '', ignoreCase = false): Json {
  const ic = ignoreCase ? { ignoreCase: true } : {};
  if (v === '*') return regex('.+');
  if (v.startsWith('*')) return prefix ? regex(`${quoteMeta(prefix)}.*${quoteMeta(v.slice(1))}`) : { suffix: v.slice(1), ...ic };
  if (v.endsWith('*')) return { prefix: prefix + v.slice(0, -1), ...ic };
  return { exact: prefix + v, ...ic };
}

/** A route HeaderMatcher for one value (Istio's HeaderMatcher; hosts ignore case). */
export function headerMatcher(name: string, v: string, ignoreCase = false): Json {
  if (v === '*') return { name, presentMatch: true };
  const ic = ignoreCase ? { ignoreCase: true } : {};
  if (v.startsWith('*')) return { name, stringMatch: { suffix: v.slice(1), ...ic } };
  if (v.endsWith('*')) return { name, stringMatch: { prefix: v.slice(0, -1), ...ic } };
  return { name, stringMatch: { exact: v, ...ic } };
}

export const cidr = (b: IpBlock): Json => ({ addressPrefix: b.address, prefixLen: { value: b.length } });

/** `.*\/ns/<ns>/.*` with `*` in the namespace meaning any run of characters. */
export const namespaceRegex = (ns: string) => `.*/ns/${ns.split('*').map(quoteMeta).join('.*')}/.*`;

/** `[ns/]sa` as the SPIFFE ids of that service account (Istio's serviceAccountRegex). */
export function serviceAccountRegex(defaultNs: string, v: string): string {
  const slash = v.indexOf('/');
  const [ns, sa] = slash < 0 ? [defaultNs, v] : [v.slice(0, slash), v.slice(slash + 1)];
  return `spiffe://.+/ns/${quoteMeta(ns)}/(.+/|)sa/${quoteMeta(sa)}(/.+)?`;
}

/** Istio's trust domain matcher over a SPIFFE id. */
export function trustDomainMatcher(v: string): Json {
  if (v === '*') return { prefix: 'spiffe://' };
  if (!v.includes('*')) return { prefix: `spiffe://${v}/` };
  const [a, b] = [v.slice(0, v.indexOf('*')), v.slice(v.indexOf('*') + 1)];
  return regex(`spiffe://${quoteMeta(a)}[^/]*${quoteMeta(b)}/.*`);
}

/** Istio's path templates: `{*}` one segment, `{**}` any number (uri_template's `*` and `**`). */
export const hasPathTemplate = (v: string) => v.includes('{*}') || v.includes('{**}');

const LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

/** Istio's CheckValidPathTemplate: undefined when valid, else why not. */
export function pathTemplateProblem(path: string): string | undefined {
  const templated = hasPathTemplate(path);
  let any = false;
  for (const glob of path.replace(/^\/+|\/+$/g, '').split('/')) {
    if ((glob === '{*}' || glob === '{**}') && any) return '{**} is not the last operator';
    if (glob === '{*}') continue;
    if (glob === '{**}') {
      any = true;
      continue;
    }
    if (/[{}]/.test(glob)) return "contains '{' or '}' beyond a supported path template";
    if (templated && !LITERAL.test(glob)) return `segment ${JSON.stringify(glob)} is not a valid literal`;
  }
  return undefined;
}

export const toUriTemplate = (v: string) => v.replaceAll('{**}', '**').replaceAll('{*}', '*');

/** A ValueMatcher for any of the values (Istio's StringOrMatcher). */
export function stringOr(values: readonly string[]): Json {
  const ms = values.map((v) => ({ stringMatch: stringMatcher(v) }));
  return ms.length === 1 ? ms[0]! : { orMatch: { valueMatchers: ms } };
}

/** A dynamic metadata matcher; `extended` also accepts the value inside a list (Istio's JWT claim form). */
export function metadataMatcher(filter: string, path: readonly string[], value: Json, extended: boolean): Json {
  const v = extended ? { orMatch: { valueMatchers: [{ listMatch: { oneOf: value } }, value] } } : value;
  return { filter, path: path.map((key) => ({ key })), value: v };
}

// Permission and Principal combinators (Envoy's rbac.v3 oneofs).
export const permAny = (): Json => ({ any: true });
export const permAnd = (rules: Json[]): Json => ({ andRules: { rules } });
export const permOr = (rules: Json[]): Json => ({ orRules: { rules } });
export const permNot = (rule: Json): Json => ({ notRule: rule });
export const prinAny = (): Json => ({ any: true });
export const prinAnd = (ids: Json[]): Json => ({ andIds: { ids } });
export const prinOr = (ids: Json[]): Json => ({ orIds: { ids } });
export const prinNot = (id: Json): Json => ({ notId: id });
export const authenticated = (m: Json): Json => ({ authenticated: { principalName: m } });

/** A policy that never matches: what an action's policy without rules becomes. */
export const MATCH_NEVER: Json = { permissions: [permNot(permAny())], principals: [prinNot(prinAny())] };
