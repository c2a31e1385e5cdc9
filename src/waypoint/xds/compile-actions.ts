// The route parts beyond matching (compile.ts): redirect, direct_response, rewrites, header changes
// (route and weighted-cluster level) and mirror policies, checked as Envoy checks them. What the
// waypoint cannot do (header value substitutions, host rewrites from headers, body files, ...) is
// refused by field, never dropped.
import type { DirectResponse, HeaderAdd, HeaderEdits, PathRewrite, Redirect, RouteRewrite } from '../router/actions.ts';
import type { Mirror } from '../router/table.ts';
import { regexProblem } from '../../util/regex-guard.ts';
import type { Msg } from './envoy.ts';

const MAX_REGEX = 1024;
/** Envoy's default max_direct_response_body_size_bytes. */
export const DEFAULT_MAX_DIRECT_BODY = 4096;

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

const REDIRECT_CODE: Record<string, number> = { MOVED_PERMANENTLY: 301, FOUND: 302, SEE_OTHER: 303, TEMPORARY_REDIRECT: 307, PERMANENT_REDIRECT: 308 };
const APPEND: Record<string, HeaderAdd['action']> = {
  APPEND_IF_EXISTS_OR_ADD: 'append', ADD_IF_ABSENT: 'add-if-absent', OVERWRITE_IF_EXISTS_OR_ADD: 'overwrite', OVERWRITE_IF_EXISTS: 'overwrite-if-exists',
};
const DENOMINATOR: Record<string, number> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 };
/** RouteAction fields in this file's domain the waypoint does not implement. */
const UNSUPPORTED_ACTION = ['hostRewriteHeader', 'hostRewritePathRegex', 'autoHostRewrite', 'pathRewritePolicy', 'appendXForwardedHost', 'internalRedirectPolicy', 'maxInternalRedirects'];
const UNSUPPORTED_HEADER_LEVEL = ['requestHeadersToAdd', 'requestHeadersToRemove', 'responseHeadersToAdd', 'responseHeadersToRemove'];

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function rewriteRegex(m: Msg | undefined, field: string): PathRewrite | undefined {
  if (!m) return undefined;
  const pattern = str(obj(m.pattern)?.regex);
  const substitution = str(m.substitution) ?? '';
  if (!pattern) throw new Error(`${field}.pattern: empty regex`);
  if (pattern.length > MAX_REGEX || substitution.length > MAX_REGEX) throw new Error(`${field}: pattern or substitution longer than ${MAX_REGEX} characters`);
  const why = regexProblem(pattern);
  if (why) throw new Error(`${field}.pattern: regex refused: ${why}`);
  try {
    return { regex: new RegExp(pattern, 'g'), substitution };
  } catch (e) {
    throw new Error(`${field}.pattern: ${(e as Error).message}`, { cause: e });
  }
}

/** A header value as Envoy's formatter reads it: `%%` is a percent sign; other `%` start a substitution, which the waypoint does not evaluate. */
function literal(v: string, field: string): string {
  if (/%/.test(v.replace(/%%/g, ''))) throw new Error(`${field}: header value substitutions (%...%) are not supported by the waypoint`);
  return v.replace(/%%/g, '%');
}

function modifiable(name: string, field: string): string {
  const n = name.toLowerCase();
  if (!n || n.startsWith(':') || n === 'host') throw new Error(`${field}: ${name || 'empty name'}: pseudo-headers and host may not be modified`);
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(n)) throw new Error(`${field}: ${name} is not a header name`);
  return n;
}

function edits(add: unknown, remove: unknown, field: string, what: 'request' | 'response'): HeaderEdits | undefined {
  const adds = arr(add).map((o, i): HeaderAdd => {
    const f = `${field}.${what}_headers_to_add[${i}]`;
    const h = obj(o.header) ?? {};
    const name = modifiable(str(h.key) ?? '', `${f}.header.key`);
    const raw = h.rawValue instanceof Uint8Array ? Buffer.from(h.rawValue).toString('utf8') : str(h.value) ?? '';
    if (/[\r\n\0]/.test(raw)) throw new Error(`${f}.header.value: CR, LF or NUL`);
    let action = APPEND[str(o.appendAction) ?? 'APPEND_IF_EXISTS_OR_ADD'];
    if (!action) throw new Error(`${f}.append_action: ${String(o.appendAction)} is not supported`);
    // The deprecated BoolValue `append` (false decodes as {}) wins when given, as in Envoy.
    if (o.append !== undefined) action = obj(o.append)?.value === true ? 'append' : 'overwrite';
    return { name, value: literal(raw, `${f}.header.value`), action, keepEmpty: o.keepEmptyValue === true };
  });
  const removes = (Array.isArray(remove) ? (remove as unknown[]) : []).map((n, i) => modifiable(String(n), `${field}.${what}_headers_to_remove[${i}]`));
  return adds.length || removes.length ? { add: adds, remove: removes } : undefined;
}

/** Route or weighted-cluster level header changes. */
export function headerEdits(m: Msg, field: string): { requestHeaders?: HeaderEdits; responseHeaders?: HeaderEdits } {
  const requestHeaders = edits(m.requestHeadersToAdd, m.requestHeadersToRemove, field, 'request');
  const responseHeaders = edits(m.responseHeadersToAdd, m.responseHeadersToRemove, field, 'response');
  return { ...(requestHeaders ? { requestHeaders } : {}), ...(responseHeaders ? { responseHeaders } : {}) };
}

/** Header changes on a virtual host or the whole route configuration: not applied by the waypoint, so refused. */
export function refuseHostLevelHeaders(m: Msg, field: string): void {
  for (const k of UNSUPPORTED_HEADER_LEVEL) if (m[k] !== undefined) throw new Error(`${field}.${snake(k)}: not supported by the waypoint (only route and weighted-cluster level)`);
}

/** How much of the path a prefix rewrite replaces: the matched prefix, or all of an exact or regex match. */
export function matchedLength(match: Msg): number | 'all' {
  if (typeof match.prefix === 'string') return match.prefix.length;
  if (typeof match.pathSeparatedPrefix === 'string') return match.pathSeparatedPrefix.length;
  return 'all';
}

export function compileRedirect(r: Msg, matched: number | 'all', field: string): Redirect {
  const code = REDIRECT_CODE[str(r.responseCode) ?? 'MOVED_PERMANENTLY'];
  if (!code) throw new Error(`${field}.response_code: ${String(r.responseCode)} is not supported`);
  const out: Redirect = { code, stripQuery: r.stripQuery === true };
  if (typeof r.schemeRedirect === 'string') out.scheme = r.schemeRedirect.toLowerCase();
  else if (r.httpsRedirect === true) out.scheme = 'https';
  if (typeof r.hostRedirect === 'string' && r.hostRedirect) {
    if (/[\s/?#@]/.test(r.hostRedirect)) throw new Error(`${field}.host_redirect: ${r.hostRedirect} is not a host`);
    out.host = r.hostRedirect;
  }
  if (typeof r.portRedirect === 'number' && r.portRedirect) {
    if (r.portRedirect > 65535) throw new Error(`${field}.port_redirect: ${r.portRedirect} is not a port`);
    out.port = r.portRedirect;
  }
  if (typeof r.pathRedirect === 'string') out.path = r.pathRedirect;
  else if (typeof r.prefixRewrite === 'string') out.rewrite = { prefix: r.prefixRewrite, matched };
  else if (obj(r.regexRewrite)) out.rewrite = rewriteRegex(obj(r.regexRewrite), `${field}.regex_rewrite`);
  for (const p of [out.path, out.rewrite && 'prefix' in out.rewrite ? out.rewrite.prefix : undefined]) {
    if (p !== undefined && /[\s#]/.test(p)) throw new Error(`${field}: path ${JSON.stringify(p)} has whitespace or a fragment`);
  }
  return out;
}

export function compileDirectResponse(d: Msg, maxBody: number, field: string): DirectResponse {
  const status = d.status;
  if (typeof status !== 'number' || status < 200 || status > 599) throw new Error(`${field}.status: ${String(status)} is not in [200, 599]`);
  const b = obj(d.body);
  if (!b) return { status };
  let body: Buffer;
  if (typeof b.inlineString === 'string') body = Buffer.from(b.inlineString);
  else if (b.inlineBytes instanceof Uint8Array) body = Buffer.from(b.inlineBytes);
  else throw new Error(`${field}.body: only inline_string and inline_bytes are supported (no filename or environment_variable)`);
  if (body.length > maxBody) throw new Error(`${field}.body: ${body.length} bytes, over max_direct_response_body_size_bytes (${maxBody})`);
  return { status, body };
}

/** The RouteAction's rewrites and mirrors. */
export function compileRouteRewrite(a: Msg, matched: number | 'all', field: string): { rewrite?: RouteRewrite; mirrors?: Mirror[] } {
  for (const k of UNSUPPORTED_ACTION) if (a[k] !== undefined) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  const rewrite: RouteRewrite = {};
  if (typeof a.prefixRewrite === 'string') rewrite.path = { prefix: a.prefixRewrite, matched };
  if (obj(a.regexRewrite)) {
    if (rewrite.path) throw new Error(`${field}: only one of prefix_rewrite and regex_rewrite`);
    rewrite.path = rewriteRegex(obj(a.regexRewrite), `${field}.regex_rewrite`);
  }
  if (typeof a.hostRewriteLiteral === 'string' && a.hostRewriteLiteral) {
    if (/[\s/?#@]/.test(a.hostRewriteLiteral)) throw new Error(`${field}.host_rewrite_literal: ${a.hostRewriteLiteral} is not a host`);
    rewrite.host = a.hostRewriteLiteral;
  }
  const mirrors = arr(a.requestMirrorPolicies).map((p, i): Mirror => {
    const f = `${field}.request_mirror_policies[${i}]`;
    const cluster = str(p.cluster);
    if (!cluster) throw new Error(`${f}.cluster: empty (cluster_header is not supported)`);
    if (p.disableShadowHostSuffixAppend === true) throw new Error(`${f}.disable_shadow_host_suffix_append: not supported by the waypoint`);
    const rf = obj(p.runtimeFraction);
    const dv = obj(rf?.defaultValue);
    let fraction = 1;
    if (rf) {
      const den = DENOMINATOR[str(dv?.denominator) ?? 'HUNDRED'];
      if (!den) throw new Error(`${f}.runtime_fraction.default_value.denominator: ${String(dv?.denominator)}`);
      fraction = Math.min(1, Number(dv?.numerator ?? 0) / den);
    }
    return { cluster, fraction };
  });
  return { ...(Object.keys(rewrite).length ? { rewrite } : {}), ...(mirrors.length ? { mirrors } : {}) };
}
