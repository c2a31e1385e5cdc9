// What a route does besides choosing a cluster, as Envoy does it: header changes (weighted cluster
// first, then route: the less specific level wins a conflict), path and authority rewrites, and the
// local answers (redirect with Location built as Envoy builds it, direct response). Pure functions
// over the request's parts; compiled from xDS in xds/compile-actions.ts.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** One header_to_add, with Envoy's HeaderAppendAction. */
export interface HeaderAdd {
  name: string;
  value: string;
  action: 'append' | 'add-if-absent' | 'overwrite' | 'overwrite-if-exists';
  keepEmpty: boolean;
}

/** Envoy evaluates removals first, then the additions in order. */
export interface HeaderEdits {
  remove: string[];
  add: HeaderAdd[];
}

/** A path rewrite: a new prefix for the matched part, or a regex substituted over the path. */
export type PathRewrite = { prefix: string; matched: number | 'all' } | { regex: RegExp; substitution: string };

export interface Redirect {
  scheme?: string;
  host?: string;
  port?: number;
  /** path_redirect: the whole path (keeps the request's query unless it has its own). */
  path?: string;
  rewrite?: PathRewrite;
  code: number;
  stripQuery: boolean;
}

export interface DirectResponse {
  status: number;
  body?: Buffer;
}

export interface RouteRewrite {
  path?: PathRewrite;
  host?: string;
}

/** Longest path a rewrite may produce (Node's default limit on a request head is 16 KiB). */
export const MAX_REWRITTEN_PATH = 8192;

type Headers = IncomingHttpHeaders | OutgoingHttpHeaders;

export function editHeaders(headers: Headers, edits: HeaderEdits | undefined): void {
  if (!edits) return;
  for (const name of edits.remove) delete headers[name];
  for (const a of edits.add) {
    if (!a.value && !a.keepEmpty) continue;
    const cur = headers[a.name];
    const exists = cur !== undefined;
    if (a.action === 'add-if-absent' && exists) continue;
    if (a.action === 'overwrite-if-exists' && !exists) continue;
    if (a.action === 'append' && exists) headers[a.name] = [...(Array.isArray(cur) ? cur : [String(cur)]), a.value];
    else headers[a.name] = a.value;
  }
}

class PathTooLong extends Error {}

/** RE2's GlobalReplace over the path: `\0`..`\9` name groups, `\\` is a backslash; bounded output. */
function substitute(re: RegExp, path: string, substitution: string): string {
  let total = path.length;
  const out = path.replace(re, (...m: unknown[]) => {
    // (match, group 1..n, offset, string[, named groups])
    const end = typeof m[m.length - 1] === 'object' ? m.length - 1 : m.length;
    const groups = m.slice(0, end - 2) as (string | undefined)[];
    const s = substitution.replace(/\\(\d|\\)/g, (_x, d: string) => (d === '\\' ? '\\' : (groups[Number(d)] ?? '')));
    total += s.length;
    if (total > MAX_REWRITTEN_PATH * 2) throw new PathTooLong();
    return s;
  });
  if (out.length > MAX_REWRITTEN_PATH) throw new PathTooLong();
  return out;
}

function rewritePath(path: string, r: PathRewrite): string {
  if ('regex' in r) return substitute(r.regex, path, r.substitution);
  const out = r.prefix + path.slice(r.matched === 'all' ? path.length : r.matched);
  if (out.length > MAX_REWRITTEN_PATH) throw new PathTooLong();
  return out;
}

const splitUrl = (url: string): [string, string] => {
  const q = url.indexOf('?');
  return q < 0 ? [url, ''] : [url.slice(0, q), url.slice(q)];
};

/** The request as forwarded: path and authority rewritten; undefined when the rewrite would produce a path longer than allowed. */
export function rewriteRequest(url: string, host: string, r: RouteRewrite | undefined): { url: string; host: string; originalPath?: string } | undefined {
  if (!r) return { url, host };
  let out = url;
  if (r.path) {
    const [path, query] = splitUrl(url);
    try {
      out = rewritePath(path, r.path) + query;
    } catch (e) {
      if (e instanceof PathTooLong) return undefined;
      throw e;
    }
  }
  return { url: out, host: r.host ?? host, ...(out !== url ? { originalPath: url } : {}) };
}

const DEFAULT_PORT: Record<string, string> = { http: ':80', https: ':443' };

/** Envoy's Http::Utility::newUri for a redirect; undefined when a rewrite would produce a path longer than allowed. */
export function redirectLocation(r: Redirect, req: { url: string; host: string; forwardedProto?: string }): string | undefined {
  const proto = req.forwardedProto === 'https' ? 'https' : 'http';
  const scheme = r.scheme ?? proto;
  let port = r.port !== undefined ? `:${r.port}` : '';
  if (DEFAULT_PORT[scheme] === port) port = '';
  let host = r.host;
  if (host === undefined) {
    host = req.host;
    const end = host.startsWith('[') ? (host.lastIndexOf(']:') < 0 ? -1 : host.lastIndexOf(']:') + 1) : host.lastIndexOf(':');
    // The request's port goes when a port is given, or when the scheme changes from the default port of the old one.
    if (end >= 0 && (r.port !== undefined || (scheme !== proto && host.slice(end) === DEFAULT_PORT[proto]))) host = host.slice(0, end);
  }
  const [path, query] = splitUrl(req.url);
  let final: string;
  let pathHasQuery = false;
  if (r.path !== undefined) {
    pathHasQuery = r.path.includes('?');
    final = pathHasQuery ? r.path : r.path + query;
  } else if (r.rewrite) {
    try {
      final = rewritePath(path, r.rewrite) + query;
    } catch (e) {
      if (e instanceof PathTooLong) return undefined;
      throw e;
    }
  } else final = req.url;
  if (!final.startsWith('/')) final = `/${final}`;
  if (!pathHasQuery && r.stripQuery) final = splitUrl(final)[0];
  return `${scheme}://${host}${port}${final}`;
}

/** A route's local answer (redirect or direct response), with the route's response header changes. */
export interface LocalAnswer {
  status: number;
  headers: OutgoingHttpHeaders;
  body: Buffer;
  details: string;
}

export function localAnswer(
  route: { redirect?: Redirect; direct?: DirectResponse; responseHeaders?: HeaderEdits },
  req: { url: string; host: string; headers: Readonly<Record<string, string | string[] | undefined>> },
): LocalAnswer | undefined {
  const headers: OutgoingHttpHeaders = {};
  let status: number;
  let body: Buffer = Buffer.alloc(0);
  if (route.redirect) {
    const xfp = req.headers['x-forwarded-proto'];
    const location = redirectLocation(route.redirect, { url: req.url, host: req.host, forwardedProto: typeof xfp === 'string' ? xfp : undefined });
    if (location === undefined) return { status: 414, headers: { 'content-type': 'text/plain' }, body: Buffer.from('URI Too Long'), details: 'redirect_path_too_long' };
    status = route.redirect.code;
    headers.location = location;
  } else if (route.direct) {
    status = route.direct.status;
    if (route.direct.body?.length) {
      body = route.direct.body;
      headers['content-type'] = 'text/plain'; // as Envoy's direct response
    }
  } else return undefined;
  editHeaders(headers, route.responseHeaders);
  return { status, headers, body, details: 'direct_response' };
}

interface RouteParts {
  rewrite?: RouteRewrite;
  requestHeaders?: HeaderEdits;
  responseHeaders?: HeaderEdits;
  clusters: { name: string; requestHeaders?: HeaderEdits; responseHeaders?: HeaderEdits }[];
}

/**
 * The request as sent upstream: the chosen cluster's header changes, then the route's, then the
 * rewrites (Envoy keeps the original path in x-envoy-original-path). Undefined when a rewrite
 * would make the path longer than MAX_REWRITTEN_PATH. Returns the response header changes to make.
 */
export function prepareUpstream(route: RouteParts | undefined, cluster: string, url: string, headers: OutgoingHttpHeaders): { url: string; response: (h: OutgoingHttpHeaders) => void } | undefined {
  if (!route) return { url, response: () => {} };
  const c = route.clusters.find((x) => x.name === cluster);
  editHeaders(headers, c?.requestHeaders);
  editHeaders(headers, route.requestHeaders);
  const out = rewriteRequest(url, String(headers.host ?? ''), route.rewrite);
  if (!out) return undefined;
  headers.host = out.host;
  if (out.originalPath !== undefined) headers['x-envoy-original-path'] = out.originalPath;
  return {
    url: out.url,
    response: (h) => {
      editHeaders(h, c?.responseHeaders);
      editHeaders(h, route.responseHeaders);
    },
  };
}
