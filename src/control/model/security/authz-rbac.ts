// One AuthorizationPolicy rule -> one Envoy RBAC Policy (envoy.config.rbac.v3.Policy), as istiod
// generates it for a waypoint (pilot/pkg/security/authz/model): one Permission per `to` entry and
// one Principal per `from` entry (a single match-all one when the list is absent), each the AND of
// its fields; a field is the OR of its values, its `not` form NOT(OR(values)); every `when`
// condition is AND-ed into each of them (source and request attributes into the principals,
// destination and connection ones into the permissions). Field order is istiod's.
//
// Dynamic metadata follows weft's contract: the JWT filter's namespace `istio_authn` with keys
// `request.auth.principal` (a string, matched per value), `request.auth.audiences`, `.presenter`
// and `.claims` (matched as istiod matches JWT claims: the value itself or one element of a list).
//
// Fail closed, as authz-rule.ts does for L4: a field weft cannot enforce (unknown field or key,
// invalid value, an HTTP attribute on a TCP chain, a source attribute CUSTOM does not take) is
// reported; an ALLOW rule holding one is dropped (it never matches), any other action's rule
// matches without it (DENY denies more, CUSTOM asks the authorizer more often).
import { anyMessage } from '../../../api/protos.ts';
import { envoyType } from '../../../api/envoy.ts';
import { isObj, toIpBlock, toPort, type Obj, type Problem } from './authz-common.ts';
import {
  authenticated,
  cidr,
  hasPathTemplate,
  headerMatcher,
  metadataMatcher,
  namespaceRegex,
  pathTemplateProblem,
  permAnd,
  permAny,
  permNot,
  permOr,
  prinAnd,
  prinAny,
  prinNot,
  prinOr,
  regex,
  serviceAccountRegex,
  stringMatcher,
  stringOr,
  toUriTemplate,
  trustDomainMatcher,
  type Json,
} from './authz-rbac-matchers.ts';

export type RbacRuleAction = 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';

export interface RbacRuleContext {
  action: RbacRuleAction;
  /** A TCP filter chain: HTTP attributes cannot be seen there. */
  forTcp: boolean;
  /** Whether dropping an HTTP attribute on a TCP chain is worth a problem (a declared TCP port). */
  reportTcp: boolean;
  /** The policy's namespace: the default namespace of `serviceAccounts` entries. */
  namespace: string;
  problems: Problem[];
}

/** The filter namespace and keys of the request's JWT attributes (weft's contract with the JWT filter). */
export const AUTHN_FILTER = 'istio_authn';
const URI_TEMPLATE = 'envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig';
/** A value longer than this is refused (no header or identity is that long; it only bloats the config). */
export const MAX_VALUE_LENGTH = 4096;

type Kind = 'perm' | 'prin';

/** How one field or condition key becomes matchers. */
interface Field {
  kind: Kind;
  http: boolean;
  /** Not allowed with CUSTOM (Istio's validation refuses it). */
  notCustom?: boolean;
  /** One value -> its matcher, or a reason it is invalid. */
  one?: (v: string) => Json | string;
  /** All values -> one matcher (istiod's "extended" generators); validated by `check`. */
  all?: (vs: string[]) => Json;
  check?: (v: string) => string | undefined;
}

class Collector {
  unenforceable = false;
  constructor(readonly ctx: RbacRuleContext) {}
  flag(field: string, why: string, report = true): undefined {
    this.unenforceable = true;
    if (!report) return undefined;
    const then = this.ctx.action === 'ALLOW' ? 'ALLOW rule dropped, it never matches' : `ignored, the ${this.ctx.action} rule matches on its other fields`;
    this.ctx.problems.push({ field, reason: `${why}: ${then}` });
    return undefined;
  }
}

const stripSpiffe = (v: string) => (v.startsWith('spiffe://') ? v.slice('spiffe://'.length) : v);
const ipPrin = (key: 'directRemoteIp' | 'remoteIp') => (v: string) => {
  const b = toIpBlock(v);
  return b ? { [key]: cidr(b) } : 'not an IP address or CIDR range';
};
const authnPrin = (path: string[]) => (vs: string[]) => ({ metadata: metadataMatcher(AUTHN_FILTER, path, stringOr(vs), true) });

function checkServiceAccount(v: string): string | undefined {
  if (v.includes('*')) return 'wildcards are not allowed';
  const parts = v.split('/');
  if (parts.length > 2 || parts.some((p) => !p)) return "expected 'serviceAccount' or 'namespace/serviceAccount'";
  return v.length > 320 ? 'longer than 320 characters' : undefined;
}

function checkWildcard(v: string): string | undefined {
  const n = v.split('*').length - 1;
  if (n > 1) return 'at most one wildcard is allowed';
  if (n === 1 && !v.startsWith('*') && !v.endsWith('*')) return 'a wildcard is only allowed at the start or end';
  return undefined;
}

function pathPermission(v: string): Json | string {
  const bad = pathTemplateProblem(v);
  if (bad) return `invalid path: ${bad}`;
  if (!hasPathTemplate(v)) return { urlPath: { path: stringMatcher(v) } };
  const t = envoyType(URI_TEMPLATE);
  const body = t.encode(t.fromObject({ pathTemplate: toUriTemplate(v) })).finish();
  return { uriTemplate: { name: 'uri-template', typedConfig: anyMessage(`type.googleapis.com/${URI_TEMPLATE}`, body) } };
}

const SOURCE: [string, string, Field][] = [
  ['principals', 'notPrincipals', { kind: 'prin', http: false, notCustom: true, one: (v) => authenticated(stringMatcher(stripSpiffe(v), 'spiffe://')) }],
  ['requestPrincipals', 'notRequestPrincipals', { kind: 'prin', http: true, notCustom: true, one: (v) => ({ metadata: metadataMatcher(AUTHN_FILTER, ['request.auth.principal'], { stringMatch: stringMatcher(v) }, false) }) }],
  ['serviceAccounts', 'notServiceAccounts', { kind: 'prin', http: false, notCustom: true, one: () => '' }],
  ['trustDomains', 'notTrustDomains', { kind: 'prin', http: false, notCustom: true, one: (v) => checkWildcard(v) ?? (v.includes('/') ? "a trust domain has no '/'" : authenticated(trustDomainMatcher(v))) }],
  ['namespaces', 'notNamespaces', { kind: 'prin', http: false, notCustom: true, one: (v) => authenticated(regex(namespaceRegex(v))) }],
  ['remoteIpBlocks', 'notRemoteIpBlocks', { kind: 'prin', http: false, one: ipPrin('remoteIp') }],
  ['ipBlocks', 'notIpBlocks', { kind: 'prin', http: false, one: ipPrin('directRemoteIp') }],
];

const OPERATION: [string, string, Field][] = [
  ['hosts', 'notHosts', { kind: 'perm', http: true, one: (v) => ({ header: headerMatcher(':authority', v, true) }) }],
  ['methods', 'notMethods', { kind: 'perm', http: true, one: (v) => ({ header: headerMatcher(':method', v) }) }],
  ['paths', 'notPaths', { kind: 'perm', http: true, one: pathPermission }],
  ['ports', 'notPorts', { kind: 'perm', http: false, one: (v) => (toPort(v) ? { destinationPort: toPort(v) } : 'not a port (1-65535)') }],
];

/** The field of a `when` key, or why the key is not usable. */
function whenField(key: string, namespace: string): Field | string {
  const sa = (v: string) => checkServiceAccount(v) ?? authenticated(regex(serviceAccountRegex(namespace, v)));
  switch (key) {
    case 'source.ip':
      return { kind: 'prin', http: false, one: ipPrin('directRemoteIp') };
    case 'remote.ip':
      return { kind: 'prin', http: false, one: ipPrin('remoteIp') };
    case 'source.namespace':
      return { kind: 'prin', http: false, notCustom: true, one: (v) => authenticated(regex(namespaceRegex(v))) };
    case 'source.principal':
      return { kind: 'prin', http: false, notCustom: true, one: (v) => authenticated(stringMatcher(stripSpiffe(v), 'spiffe://')) };
    case 'source.serviceAccount':
      return { kind: 'prin', http: false, notCustom: true, one: sa };
    case 'source.trustDomain':
      return { kind: 'prin', http: false, notCustom: true, one: (v) => checkWildcard(v) ?? authenticated(trustDomainMatcher(v)) };
    case 'request.auth.principal':
      return { kind: 'prin', http: true, notCustom: true, one: (v) => ({ metadata: metadataMatcher(AUTHN_FILTER, [key], { stringMatch: stringMatcher(v) }, false) }) };
    case 'request.auth.audiences':
    case 'request.auth.presenter':
      return { kind: 'prin', http: true, notCustom: true, all: authnPrin([key]) };
    case 'destination.ip':
      return { kind: 'perm', http: false, one: (v) => (toIpBlock(v) ? { destinationIp: cidr(toIpBlock(v)!) } : 'not an IP address or CIDR range') };
    case 'destination.port':
      return { kind: 'perm', http: false, one: (v) => (toPort(v) ? { destinationPort: toPort(v) } : 'not a port (1-65535)') };
    case 'connection.sni':
      return { kind: 'perm', http: false, one: (v) => ({ requestedServerName: stringMatcher(v) }) };
  }
  if (key.startsWith('request.headers')) {
    const name = bracketed(key.slice('request.headers'.length));
    if (!name || name.length !== 1) return `expected request.headers[<name>], found ${key}`;
    return { kind: 'prin', http: true, one: (v) => ({ header: headerMatcher(name[0]!, v) }) };
  }
  if (key.startsWith('request.auth.claims')) {
    const claims = bracketed(key.slice('request.auth.claims'.length));
    if (!claims) return `expected request.auth.claims[<claim>] or [<claim>][<nested>]..., found ${key}`;
    return { kind: 'prin', http: true, notCustom: true, all: authnPrin(['request.auth.claims', ...claims]) };
  }
  if (key.startsWith('experimental.')) return `experimental attribute ${key} is not supported by weft`;
  return `unknown condition key ${key}`;
}

/** `[a]`, `[a][b]`... -> the names; undefined when malformed or a name is empty. */
function bracketed(s: string): string[] | undefined {
  const m = s.match(/^(\[[^[\]]+\])+$/);
  if (!m) return undefined;
  return s.slice(1, -1).split('][');
}

/** The string values of a field; undefined (flagged) when not a list of non-empty strings. */
function readValues(c: Collector, v: unknown, path: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) return c.flag(path, 'expected a list of strings');
  const out: string[] = [];
  for (const [i, s] of v.entries()) {
    const str = typeof s === 'number' && Number.isInteger(s) ? String(s) : s;
    if (typeof str !== 'string' || !str) return c.flag(`${path}[${i}]`, 'expected a non-empty string');
    if (str.length > MAX_VALUE_LENGTH) return c.flag(`${path}[${i}]`, `longer than ${MAX_VALUE_LENGTH} characters`);
    out.push(str);
  }
  return out.length ? out : undefined;
}

/** The matchers of one field: [OR(values)], then [NOT(OR(notValues))]; flagged parts left out. */
function fieldMatchers(c: Collector, f: Field, values: string[] | undefined, notValues: string[] | undefined, paths: [string, string], label: string): Json[] {
  const out: Json[] = [];
  if (!values && !notValues) return out;
  if (c.ctx.forTcp && f.http) {
    c.flag(paths[values ? 0 : 1], `${label} is an HTTP attribute, not seen on a TCP port`, c.ctx.reportTcp);
    return out;
  }
  if (c.ctx.action === 'CUSTOM' && f.notCustom) {
    c.flag(paths[values ? 0 : 1], `${label} is not supported with action CUSTOM`);
    return out;
  }
  const or = f.kind === 'perm' ? permOr : prinOr;
  const not = f.kind === 'perm' ? permNot : prinNot;
  const one = (vs: string[] | undefined, path: string): Json | undefined => {
    if (!vs) return undefined;
    if (f.all) return f.all(vs);
    const ms: Json[] = [];
    for (const [i, v] of vs.entries()) {
      const m = f.one!(v);
      if (typeof m === 'string') return c.flag(`${path}[${i}]`, `invalid value ${JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}...` : v)}: ${m}`);
      ms.push(m);
    }
    return or(ms);
  };
  const pos = one(values, paths[0]);
  const neg = one(notValues, paths[1]);
  if (pos) out.push(pos);
  if (neg) out.push(not(neg));
  return out;
}

/** One `from[].source` or `to[].operation` object -> its matchers, in istiod's field order. */
function objectMatchers(c: Collector, o: unknown, path: string, fields: [string, string, Field][], extraKnown: string[] = []): Json[] | undefined {
  if (!isObj(o)) return c.flag(path, 'expected an object');
  const known = fields.flatMap(([a, b]) => [a, b]);
  for (const k of Object.keys(o)) if (!known.includes(k) && !extraKnown.includes(k)) c.flag(`${path}.${k}`, 'unknown field');
  const out: Json[] = [];
  let any = false;
  for (const [pos, neg, f] of fields) {
    const values = readValues(c, o[pos], `${path}.${pos}`);
    const notValues = readValues(c, o[neg], `${path}.${neg}`);
    any ||= o[pos] !== undefined || o[neg] !== undefined;
    out.push(...fieldMatchers(c, f, values, notValues, [`${path}.${pos}`, `${path}.${neg}`], pos));
  }
  if (!any) c.flag(path, 'must not be empty (Istio refuses it)');
  return out;
}

function sourceMatchers(c: Collector, src: Obj, path: string): Json[] | undefined {
  const sa = src.serviceAccounts !== undefined || src.notServiceAccounts !== undefined;
  if (sa && ['principals', 'notPrincipals', 'namespaces', 'notNamespaces'].some((k) => src[k] !== undefined)) c.flag(`${path}.serviceAccounts`, 'cannot be combined with principals or namespaces');
  const fields = SOURCE.map(([a, b, f]): [string, string, Field] =>
    a === 'serviceAccounts' ? [a, b, { ...f, one: (v) => checkServiceAccount(v) ?? authenticated(regex(serviceAccountRegex(c.ctx.namespace, v))) }] : [a, b, f],
  );
  return objectMatchers(c, src, path, fields);
}

/** A list field of the rule (`from`/`to`/`when`); undefined when absent, flagged when not a non-empty list. */
function listField(c: Collector, r: Obj, k: string, path: string): unknown[] | undefined {
  const v = r[k];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) return c.flag(`${path}.${k}`, 'expected a list');
  if (!v.length) c.flag(`${path}.${k}`, 'must not be empty (Istio refuses it)');
  return v;
}

/** One rule as an Envoy RBAC Policy; undefined when the rule is dropped (ALLOW with an unenforceable part). */
export function translateRbacRule(rule: unknown, path: string, ctx: RbacRuleContext): Json | undefined {
  const c = new Collector(ctx);
  const basePerm: Json[] = [];
  const basePrin: Json[] = [];
  const froms: Json[][] = [];
  const tos: Json[][] = [];
  if (!isObj(rule)) c.flag(path, 'expected an object');
  else {
    for (const k of Object.keys(rule)) if (!['from', 'to', 'when'].includes(k)) c.flag(`${path}.${k}`, 'unknown field');
    for (const [i, w] of (listField(c, rule, 'when', path) ?? []).entries()) {
      const p = `${path}.when[${i}]`;
      if (!isObj(w)) {
        c.flag(p, 'expected an object');
        continue;
      }
      for (const k of Object.keys(w)) if (!['key', 'values', 'notValues'].includes(k)) c.flag(`${p}.${k}`, 'unknown field');
      if (typeof w.key !== 'string' || !w.key) {
        c.flag(`${p}.key`, 'required');
        continue;
      }
      const f = whenField(w.key, ctx.namespace);
      if (typeof f === 'string') {
        c.flag(`${p}.key`, f);
        continue;
      }
      const values = readValues(c, w.values, `${p}.values`);
      const notValues = readValues(c, w.notValues, `${p}.notValues`);
      if (w.values === undefined && w.notValues === undefined) c.flag(p, 'one of values or notValues is required');
      (f.kind === 'perm' ? basePerm : basePrin).push(...fieldMatchers(c, f, values, notValues, [`${p}.values`, `${p}.notValues`], w.key));
    }
    for (const [i, f] of (listField(c, rule, 'from', path) ?? []).entries()) {
      const p = `${path}.from[${i}]`;
      if (!isObj(f)) {
        c.flag(p, 'expected an object');
        continue;
      }
      for (const k of Object.keys(f)) if (k !== 'source') c.flag(`${p}.${k}`, 'unknown field');
      if (!isObj(f.source)) c.flag(`${p}.source`, 'required: an object');
      froms.push((isObj(f.source) && sourceMatchers(c, f.source, `${p}.source`)) || []);
    }
    for (const [i, t] of (listField(c, rule, 'to', path) ?? []).entries()) {
      const p = `${path}.to[${i}]`;
      if (!isObj(t)) {
        c.flag(p, 'expected an object');
        continue;
      }
      for (const k of Object.keys(t)) if (k !== 'operation') c.flag(`${p}.${k}`, 'unknown field');
      if (!isObj(t.operation)) c.flag(`${p}.operation`, 'required: an object');
      tos.push((isObj(t.operation) && objectMatchers(c, t.operation, `${p}.operation`, OPERATION)) || []);
    }
  }
  if (c.unenforceable && ctx.action === 'ALLOW') return undefined;
  const perm = (own: Json[]) => permAnd([...own, ...basePerm].length ? [...own, ...basePerm] : [permAny()]);
  const prin = (own: Json[]) => prinAnd([...own, ...basePrin].length ? [...own, ...basePrin] : [prinAny()]);
  return {
    permissions: (tos.length ? tos : [[]]).map(perm),
    principals: (froms.length ? froms : [[]]).map(prin),
  };
}
