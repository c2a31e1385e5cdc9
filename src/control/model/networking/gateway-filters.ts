// Gateway API route filters (HTTPRoute and GRPCRoute, rule and backendRef level) -> the rule's
// actions: header changes, redirect, URL rewrite and mirrors, as Istio translates them. A prefix
// replacement depends on the match it applies to, so the filters resolve per match (forMatch).
// Filters weft cannot apply (CORS, ExtensionRef, unknown types) make the object invalid: ignoring
// one would change what the route does.
import type { Checker } from './common.ts';
import { checkHeaderOps, headerPolicy, mergeHost } from './route-actions.ts';
import type { HeaderOps, HeaderPolicy, MirrorPolicy, RedirectPolicy, RewritePolicy, RouteRule, StringMatch } from './routes.ts';
import type { MeshOptions } from './workloads.ts';

type PathModifier = { full: string } | { prefix: string };

export interface RuleFilters {
  headers?: HeaderPolicy;
  redirect?: Omit<RedirectPolicy, 'path' | 'prefix' | 'regex'> & { path?: PathModifier };
  /** The actions for one match of the rule (its path decides a prefix replacement). */
  forMatch(path: StringMatch | undefined, field: string): Pick<RouteRule, 'headers' | 'redirect' | 'rewrite' | 'mirrors'>;
}

const HTTP_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror'];
const GRPC_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror'];
const BACKEND_FILTERS = ['RequestHeaderModifier', 'ResponseHeaderModifier'];
const FIELD: Record<string, string> = {
  RequestHeaderModifier: 'requestHeaderModifier', ResponseHeaderModifier: 'responseHeaderModifier', RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite', RequestMirror: 'requestMirror', CORS: 'cors', ExtensionRef: 'extensionRef',
};
const escapeSubstitution = (s: string) => s.replace(/\\/g, '\\\\');

export function gatewayFilters(c: Checker, v: unknown, field: string, ns: string, o: MeshOptions, grpc: boolean, backend = false): RuleFilters {
  const allowed = backend ? BACKEND_FILTERS : grpc ? GRPC_FILTERS : HTTP_FILTERS;
  let request: HeaderOps | undefined;
  let response: HeaderOps | undefined;
  let hostFromHeaders: string | undefined;
  let redirect: RuleFilters['redirect'];
  let rewrite: { host?: string; path?: PathModifier } | undefined;
  const mirrors: MirrorPolicy[] = [];
  const seen = new Set<string>();
  for (const [i, raw] of c.list(v, field).entries()) {
    const f = `${field}[${i}]`;
    const fo = c.obj(raw, f);
    if (!fo) continue;
    const type = typeof fo.type === 'string' ? fo.type : '';
    if (!allowed.includes(type)) {
      c.error(`${f}.type`, `${type || 'missing'}: ${backend ? 'only header modifiers are supported on a backendRef' : `not supported by weft (supported: ${allowed.join(', ')})`}`);
      continue;
    }
    if (type !== 'RequestMirror' && seen.has(type)) c.error(`${f}.type`, `${type} may appear only once`);
    seen.add(type);
    const key = FIELD[type]!;
    c.known(fo, f, ['type', key]);
    const body = c.obj(fo[key], `${f}.${key}`);
    if (!body) {
      c.error(`${f}.${key}`, `required for ${type}`);
      continue;
    }
    const bf = `${f}.${key}`;
    if (type === 'RequestHeaderModifier' || type === 'ResponseHeaderModifier') {
      const ops = headerOps(c, body, bf);
      const isRequest = type === 'RequestHeaderModifier';
      const { host } = checkHeaderOps(c, ops, bf, isRequest);
      if (isRequest) [request, hostFromHeaders] = [ops, host];
      else response = ops;
    } else if (type === 'RequestRedirect') redirect = parseRedirect(c, body, bf);
    else if (type === 'URLRewrite') rewrite = parseRewrite(c, body, bf);
    else if (type === 'RequestMirror') {
      const m = parseMirror(c, body, bf, ns, o);
      if (m) mirrors.push(m);
    }
  }
  if (redirect && rewrite) c.error(field, 'RequestRedirect and URLRewrite cannot both be used');
  if (hostFromHeaders !== undefined && redirect) c.error(field, 'a Host set by RequestHeaderModifier has no effect on a redirect');
  const headers = headerPolicy(request, response);
  return {
    headers,
    redirect,
    forMatch(path, mf) {
      const out: ReturnType<RuleFilters['forMatch']> = {};
      if (headers) out.headers = headers;
      if (mirrors.length) out.mirrors = mirrors;
      if (redirect) {
        const { path: mod, ...rest } = redirect;
        out.redirect = { ...rest, ...(mod ? pathRedirect(c, mod, path, mf) : {}) };
      }
      let rw: RewritePolicy | undefined = rewrite?.host !== undefined ? { host: rewrite.host } : undefined;
      if (rewrite?.path) rw = { ...rw, ...pathRedirect(c, rewrite.path, path, mf, true) };
      rw = mergeHost(c, rw, hostFromHeaders, `${mf}: RequestHeaderModifier set Host`);
      if (rw) out.rewrite = rw;
      return out;
    },
  };
}

/** A path modifier for one match: a whole path, or a new prefix for a PathPrefix match (the Envoy routes keep the separator, routes.ts). */
function pathRedirect(c: Checker, mod: PathModifier, match: StringMatch | undefined, field: string, rewrite = false): { path?: string; prefix?: string; regex?: { pattern: string; substitution: string } } {
  if ('full' in mod) return rewrite ? { regex: { pattern: '^/.*$', substitution: escapeSubstitution(mod.full) } } : { path: mod.full };
  if (!match || !('prefix' in match)) {
    c.error(field, 'ReplacePrefixMatch needs PathPrefix matches');
    return {};
  }
  return { prefix: mod.prefix };
}

function headerOps(c: Checker, body: Record<string, unknown>, field: string): HeaderOps {
  c.known(body, field, ['set', 'add', 'remove']);
  const pairs = (v: unknown, f: string) =>
    c.list(v, f).flatMap((raw, i) => {
      const h = c.obj(raw, `${f}[${i}]`);
      const name = h ? c.str(h.name, `${f}[${i}].name`, true) : undefined;
      const value = h ? c.str(h.value, `${f}[${i}].value`, true) : undefined;
      return name !== undefined && value !== undefined ? [{ name: name.toLowerCase(), value }] : [];
    });
  const remove = c.list(body.remove, `${field}.remove`).flatMap((n, i) => c.str(n, `${field}.remove[${i}]`, true)?.toLowerCase() ?? []);
  return { set: pairs(body.set, `${field}.set`), add: pairs(body.add, `${field}.add`), remove };
}

function pathModifier(c: Checker, v: unknown, field: string): PathModifier | undefined {
  const p = c.obj(v, field);
  if (!p) return undefined;
  c.known(p, field, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  if (p.type === 'ReplaceFullPath') {
    const full = c.str(p.replaceFullPath, `${field}.replaceFullPath`, true);
    if (full !== undefined && !full.startsWith('/')) return c.error(`${field}.replaceFullPath`, 'must start with "/"');
    return full === undefined ? undefined : { full };
  }
  if (p.type === 'ReplacePrefixMatch') {
    const prefix = c.str(p.replacePrefixMatch, `${field}.replacePrefixMatch`, true);
    if (prefix !== undefined && !prefix.startsWith('/')) return c.error(`${field}.replacePrefixMatch`, 'must start with "/"');
    return prefix === undefined ? undefined : { prefix };
  }
  return c.error(`${field}.type`, 'expected ReplaceFullPath or ReplacePrefixMatch');
}

function hostname(c: Checker, v: unknown, field: string): string | undefined {
  const h = c.str(v, field, v !== undefined);
  if (h !== undefined && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/i.test(h)) return c.error(field, 'not a hostname');
  return h;
}

function parseRedirect(c: Checker, b: Record<string, unknown>, field: string): RuleFilters['redirect'] {
  c.known(b, field, ['scheme', 'hostname', 'path', 'port', 'statusCode']);
  const code = c.int(b.statusCode, `${field}.statusCode`, 0, 999) ?? 302;
  if (![301, 302, 303, 307, 308].includes(code)) return c.error(`${field}.statusCode`, 'expected 301, 302, 303, 307 or 308');
  const out: NonNullable<RuleFilters['redirect']> = { code };
  if (b.scheme !== undefined) {
    if (b.scheme !== 'http' && b.scheme !== 'https') return c.error(`${field}.scheme`, 'expected http or https');
    out.scheme = b.scheme;
  }
  const host = hostname(c, b.hostname, `${field}.hostname`);
  if (host !== undefined) out.host = host;
  const port = c.int(b.port, `${field}.port`, 1, 65535);
  // Gateway API: no port but a scheme means the scheme's well-known port (left out of Location).
  if (port !== undefined) out.port = port;
  else if (out.scheme) out.port = out.scheme === 'https' ? 443 : 80;
  const path = pathModifier(c, b.path, `${field}.path`);
  if (path) out.path = path;
  return out;
}

function parseRewrite(c: Checker, b: Record<string, unknown>, field: string): { host?: string; path?: PathModifier } {
  c.known(b, field, ['hostname', 'path']);
  const host = hostname(c, b.hostname, `${field}.hostname`);
  const path = pathModifier(c, b.path, `${field}.path`);
  return { ...(host !== undefined ? { host } : {}), ...(path ? { path } : {}) };
}

function parseMirror(c: Checker, b: Record<string, unknown>, field: string, ns: string, o: MeshOptions): MirrorPolicy | undefined {
  c.known(b, field, ['backendRef', 'percent', 'fraction']);
  const ref = c.obj(b.backendRef, `${field}.backendRef`);
  if (!ref) return c.error(`${field}.backendRef`, 'required');
  if ((ref.kind ?? 'Service') !== 'Service' || (ref.group ?? '') !== '') return c.error(`${field}.backendRef`, 'only Service backends can be mirrored to');
  const name = c.str(ref.name, `${field}.backendRef.name`, true);
  const port = c.int(ref.port, `${field}.backendRef.port`, 1, 65535);
  if (ref.port === undefined) return c.error(`${field}.backendRef.port`, 'required for a Service backend');
  const bns = c.str(ref.namespace, `${field}.backendRef.namespace`) ?? ns;
  if (b.percent !== undefined && b.fraction !== undefined) return c.error(field, 'percent and fraction cannot both be set');
  let percent = c.int(b.percent, `${field}.percent`, 0, 100) ?? 100;
  const fr = c.obj(b.fraction, `${field}.fraction`);
  if (fr) {
    const num = c.int(fr.numerator, `${field}.fraction.numerator`, 0);
    const den = c.int(fr.denominator, `${field}.fraction.denominator`, 1) ?? 100;
    if (num === undefined) return c.error(`${field}.fraction.numerator`, 'required');
    if (num > den) return c.error(`${field}.fraction`, 'numerator must not exceed denominator');
    percent = (num / den) * 100;
  }
  return name && port ? { host: `${name}.${bns}.svc.${o.clusterDomain}`, port, percent } : undefined;
}
