// Checks both route kinds share for what a rule does besides forwarding (VirtualService and the
// Gateway API filters): header changes Envoy can make, redirect codes it knows, and the bounds on
// what the control plane will hand a proxy (direct response bodies, rewrite patterns).
import type { Checker } from './common.ts';
import type { HeaderOps, HeaderPolicy, RewritePolicy } from './routes.ts';

/** Envoy's RedirectResponseCode, by status. */
export const REDIRECT_CODES = [301, 302, 303, 307, 308] as const;
/** The largest direct response body the routes carry (the route configuration's limit says so to the proxy). */
export const MAX_DIRECT_BODY = 64 * 1024;
/** Regex patterns and substitutions are bounded: one object cannot hand a proxy a huge program. */
export const MAX_PATTERN = 1024;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const isAuthority = (name: string) => name === 'host' || name === ':authority';

/**
 * Validates header changes in place: names must be HTTP tokens and not pseudo-headers (Envoy
 * refuses to modify those); setting Host on requests is an authority rewrite (as Istio does),
 * returned to be put in the rule's rewrite.
 */
export function checkHeaderOps(c: Checker, ops: HeaderOps, field: string, request: boolean): { host?: string } {
  let host: string | undefined;
  ops.set = ops.set.filter(({ name, value }) => {
    if (request && isAuthority(name)) {
      host = value;
      return false;
    }
    return checkName(c, name, `${field}.set`, value);
  });
  ops.add = ops.add.filter(({ name, value }) => checkName(c, name, `${field}.add`, value));
  ops.remove = ops.remove.filter((name) => checkName(c, name, `${field}.remove`, ''));
  return { host };
}

function checkName(c: Checker, name: string, field: string, value: string): boolean {
  if (!TOKEN.test(name) || isAuthority(name)) return !c.error(`${field}.${name}`, name.startsWith(':') || isAuthority(name) ? 'pseudo-headers and Host cannot be modified (set Host on requests to rewrite the authority)' : 'not a valid header name');
  if (/[\r\n\0]/.test(value)) return !c.error(`${field}.${name}`, 'header values cannot contain CR, LF or NUL');
  return true;
}

/** Lower-cased names; null when nothing is left to do. */
export function headerPolicy(request: HeaderOps | undefined, response: HeaderOps | undefined): HeaderPolicy | undefined {
  const empty = (o?: HeaderOps) => !o || (!o.set.length && !o.add.length && !o.remove.length);
  if (empty(request) && empty(response)) return undefined;
  return { ...(empty(request) ? {} : { request }), ...(empty(response) ? {} : { response }) };
}

/** A Host set among the request headers becomes the authority rewrite, unless one is given already. */
export function mergeHost(c: Checker, rewrite: RewritePolicy | undefined, host: string | undefined, field: string): RewritePolicy | undefined {
  if (host === undefined) return rewrite;
  if (rewrite?.host !== undefined && rewrite.host !== host) {
    c.error(field, 'sets Host and also rewrites the authority to something else');
    return rewrite;
  }
  return { ...rewrite, host };
}

export function checkPattern(c: Checker, pattern: string | undefined, substitution: string | undefined, field: string): { pattern: string; substitution: string } | undefined {
  if (pattern === undefined || pattern === '') return c.error(`${field}.match`, 'required');
  if (substitution === undefined) return c.error(`${field}.rewrite`, 'required');
  if (pattern.length > MAX_PATTERN || substitution.length > MAX_PATTERN) return c.error(field, `pattern and rewrite are limited to ${MAX_PATTERN} characters`);
  if (c.regex(pattern, `${field}.match`) === undefined) return undefined;
  return { pattern, substitution };
}
