// Envoy's RBAC Permission and Principal (envoy.config.rbac.v3), compiled once into predicates over
// a request or a connection (facts.ts). Every rule and identifier Istio generates is here; anything
// else (filter_state, matcher, a rule this waypoint does not know, a field it would have to ignore)
// refuses the filter naming the field: a rule that cannot be enforced never reads as "matches" or
// "does not match" silently. Nesting is bounded (MAX_DEPTH) and so is the filter's size
// (Budget), so a hostile resource cannot exhaust the stack or memory.
//
// On a connection (the network RBAC filter) there is no request: header matchers see no headers
// (as Envoy's network filter gives them an empty header map), url_path and uri_template never
// match, metadata matchers see no metadata.
import type { Msg } from '../../xds/envoy.ts';
import { stringMatcher } from '../../xds/string-matcher.ts';
import { decodeEnvoy } from '../../xds/envoy.ts';
import { cidrMatcher, destinationIpOf, headerOf, isHttp, portOf, uriSanOf, type Facts, type Pred } from './facts.ts';
import { metadataMatcher, oneof } from './metadata.ts';
import { uriTemplateMatcher } from './uri-template.ts';

export const MAX_DEPTH = 32;
/** Permissions and principals (every node) in one filter. */
export const MAX_NODES = 100_000;

export interface Budget {
  nodes: number;
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const URI_TEMPLATE = 'envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig';

const TRUE: Pred = () => true;
const FALSE: Pred = () => false;

function all(preds: Pred[]): Pred {
  if (preds.length === 1) return preds[0]!;
  return (f) => {
    for (const p of preds) if (!p(f)) return false;
    return true;
  };
}

function any(preds: Pred[]): Pred {
  if (preds.length === 1) return preds[0]!;
  return (f) => {
    for (const p of preds) if (p(f)) return true;
    return false;
  };
}

/** The one field of a oneof message, refusing any other field beside it. */
function only(m: Msg, oneofName: string, field: string, depth: number, budget: Budget): string {
  if (depth > MAX_DEPTH) throw new Error(`${field}: nested deeper than ${MAX_DEPTH}`);
  if (++budget.nodes > MAX_NODES) throw new Error(`${field}: more than ${MAX_NODES} permissions and principals in one filter`);
  const which = oneof(m, oneofName, field);
  for (const k of Object.keys(m)) if (k !== oneofName && k !== which) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  return which;
}

/** Envoy's HeaderMatcher as RBAC applies it (HeaderUtility::matchHeaders): a missing header matches only an absence test. */
export function headerPred(h: Msg, field: string): Pred {
  const name = typeof h.name === 'string' ? h.name.toLowerCase() : '';
  if (!name) throw new Error(`${field}.name: empty`);
  const invert = h.invertMatch === true;
  const missingAsEmpty = h.treatMissingHeaderAsEmpty === true;
  const kind = h.headerMatchSpecifier as string | undefined;
  for (const k of Object.keys(h)) {
    if (!['name', 'invertMatch', 'treatMissingHeaderAsEmpty', 'headerMatchSpecifier', kind].includes(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
  let test: ((v: string) => boolean) | undefined;
  let present: boolean | undefined;
  const at = `${field}.${snake(kind ?? 'present_match')}`;
  switch (kind) {
    case undefined:
      present = true; // no specifier: Envoy reads it as present_match
      break;
    case 'presentMatch':
      present = h.presentMatch === true;
      break;
    case 'stringMatch':
      test = stringMatcher(obj(h.stringMatch) ?? {}, at);
      break;
    case 'exactMatch':
      test = stringMatcher({ exact: h.exactMatch }, at);
      break;
    case 'prefixMatch':
      test = stringMatcher({ prefix: h.prefixMatch }, at);
      break;
    case 'suffixMatch':
      test = stringMatcher({ suffix: h.suffixMatch }, at);
      break;
    case 'containsMatch':
      test = stringMatcher({ contains: h.containsMatch }, at);
      break;
    case 'safeRegexMatch':
      test = stringMatcher({ safeRegex: h.safeRegexMatch }, at);
      break;
    case 'rangeMatch': {
      const r = obj(h.rangeMatch) ?? {};
      const start = Number(r.start ?? 0);
      const end = Number(r.end ?? 0);
      test = (v) => /^-?\d+$/.test(v) && Number(v) >= start && Number(v) < end;
      break;
    }
    default:
      throw new Error(`${at}: not supported by the waypoint`);
  }
  const t = test;
  return (f) => {
    let v = isHttp(f) ? headerOf(f, name) : undefined;
    if (v === undefined) {
      if (!missingAsEmpty) return present !== undefined && present === invert;
      v = '';
    }
    if (present !== undefined) return present !== invert;
    return t!(v) !== invert;
  };
}

/** Envoy's PathMatcher on the request's path (normalized, without the query: FilterRequest.path). */
function urlPathPred(m: Msg, field: string): Pred {
  const which = oneof(m, 'rule', field);
  if (which !== 'path') throw new Error(`${field}.${snake(which)}: not supported by the waypoint`);
  const match = stringMatcher(obj(m.path) ?? {}, `${field}.path`);
  return (f) => isHttp(f) && match(f.path);
}

function uriTemplatePred(m: Msg, field: string): Pred {
  const any = obj(m.typedConfig);
  const url = String(any?.typeUrl ?? any?.type_url ?? '');
  if (!url.endsWith(`/${URI_TEMPLATE}`)) throw new Error(`${field}.typed_config: ${url || 'empty'} is not a ${URI_TEMPLATE}`);
  let cfg: Msg;
  try {
    cfg = decodeEnvoy(URI_TEMPLATE, (any!.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${field}.typed_config: does not decode: ${(e as Error).message}`, { cause: e });
  }
  const match = uriTemplateMatcher(cfg.pathTemplate, `${field}.typed_config`);
  return (f) => isHttp(f) && match(f.path);
}

function portRange(m: Msg, field: string): Pred {
  const start = Number(m.start ?? 0);
  const end = Number(m.end ?? 0);
  if (start > end) throw new Error(`${field}: start ${start} after end ${end}`);
  return (f) => {
    const p = portOf(f.destination);
    return p >= start && p < end;
  };
}

function metadataPred(m: Msg, field: string): Pred {
  const match = metadataMatcher(m, field);
  return (f) => match(isHttp(f) ? f.metadata : undefined);
}

function set(m: Msg, key: 'rules' | 'ids', field: string, each: (x: Msg, field: string) => Pred): Pred[] {
  const list = (m[key] as Msg[] | undefined) ?? [];
  if (!list.length) throw new Error(`${field}.${key}: empty`);
  for (const k of Object.keys(m)) if (k !== key) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  return list.map((x, i) => each(x, `${field}.${key}[${i}]`));
}

/** envoy.config.rbac.v3.Permission. */
export function permission(m: Msg, field: string, budget: Budget, depth = 0): Pred {
  const which = only(m, 'rule', field, depth, budget);
  const at = `${field}.${snake(which)}`;
  const nested = (x: Msg, f: string) => permission(x, f, budget, depth + 1);
  switch (which) {
    case 'any':
      if (m.any !== true) throw new Error(`${at}: must be true`); // Envoy's validation (const: true)
      return TRUE;
    case 'andRules':
      return all(set(obj(m.andRules) ?? {}, 'rules', at, nested));
    case 'orRules':
      return any(set(obj(m.orRules) ?? {}, 'rules', at, nested));
    case 'notRule': {
      const p = nested(obj(m.notRule) ?? {}, at);
      return (f) => !p(f);
    }
    case 'header':
      return headerPred(obj(m.header) ?? {}, at);
    case 'urlPath':
      return urlPathPred(obj(m.urlPath) ?? {}, at);
    case 'uriTemplate':
      return uriTemplatePred(obj(m.uriTemplate) ?? {}, at);
    case 'destinationIp': {
      const match = cidrMatcher(obj(m.destinationIp) ?? {}, at);
      return (f) => match(destinationIpOf(f));
    }
    case 'destinationPort': {
      const port = Number(m.destinationPort ?? 0);
      if (port > 65535) throw new Error(`${at}: ${port} is not a port`);
      return (f) => portOf(f.destination) === port;
    }
    case 'destinationPortRange':
      return portRange(obj(m.destinationPortRange) ?? {}, at);
    case 'metadata':
      return metadataPred(obj(m.metadata) ?? {}, at);
    case 'requestedServerName': {
      // Plaintext inside the HBONE tunnel: no SNI, so Envoy matches the empty name.
      const sni = stringMatcher(obj(m.requestedServerName) ?? {}, at)('');
      return sni ? TRUE : FALSE;
    }
    default:
      throw new Error(`${at}: not supported by the waypoint`);
  }
}

/** envoy.config.rbac.v3.Principal. */
export function principal(m: Msg, field: string, budget: Budget, depth = 0): Pred {
  const which = only(m, 'identifier', field, depth, budget);
  const at = `${field}.${snake(which)}`;
  const nested = (x: Msg, f: string) => principal(x, f, budget, depth + 1);
  switch (which) {
    case 'any':
      if (m.any !== true) throw new Error(`${at}: must be true`);
      return TRUE;
    case 'andIds':
      return all(set(obj(m.andIds) ?? {}, 'ids', at, nested));
    case 'orIds':
      return any(set(obj(m.orIds) ?? {}, 'ids', at, nested));
    case 'notId': {
      const p = nested(obj(m.notId) ?? {}, at);
      return (f) => !p(f);
    }
    case 'authenticated': {
      const a = obj(m.authenticated) ?? {};
      for (const k of Object.keys(a)) if (k !== 'principalName') throw new Error(`${at}.${snake(k)}: not supported by the waypoint`);
      // No principal_name: any authenticated peer (every HBONE peer is, by its mTLS certificate).
      if (!obj(a.principalName)) return (f) => f.peerPrincipal !== '';
      const match = stringMatcher(obj(a.principalName)!, `${at}.principal_name`);
      return (f) => f.peerPrincipal !== '' && match(uriSanOf(f));
    }
    // The HBONE peer's address is the original client's (the tunnel carries it). No
    // X-Forwarded-For is trusted, so remote_ip is the direct one too.
    case 'sourceIp':
    case 'directRemoteIp':
    case 'remoteIp': {
      const match = cidrMatcher(obj(m[which]) ?? {}, at);
      return (f) => match(f.peerIp);
    }
    case 'header':
      return headerPred(obj(m.header) ?? {}, at);
    case 'urlPath':
      return urlPathPred(obj(m.urlPath) ?? {}, at);
    case 'metadata':
      return metadataPred(obj(m.metadata) ?? {}, at);
    default:
      throw new Error(`${at}: not supported by the waypoint`);
  }
}

export type { Facts, Pred };
