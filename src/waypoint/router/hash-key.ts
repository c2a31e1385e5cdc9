// A route's hash_policy over one request, as Envoy evaluates it: each policy that finds its input
// adds its hash (the running hash rotated left one bit, then xor), a terminal one that found it
// ends the list, and none found means no hash (the cluster then picks at random). A cookie policy
// with a ttl whose cookie is absent makes one, as Envoy does: its value derived from the client's
// address (so the client's concurrent requests get the same), hashed as the cookie would be, and
// set on the response (`name="value"; Max-Age=ttl; Path=path; HttpOnly`).
import { createHash } from 'node:crypto';
import { hash32 } from '../upstream/hash.ts';
import type { HashPolicy, RequestFacts } from './table.ts';

export interface RequestHash {
  hash?: number;
  /** A Set-Cookie header value to add to the response. */
  setCookie?: string;
}

/** The value of cookie `name` in the Cookie header(s), quotes taken off. */
export function cookieValue(header: string | string[] | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const line of Array.isArray(header) ? header : [header])
    for (const part of line.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
      const v = part.slice(eq + 1).trim();
      return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
    }
  return undefined;
}

const rotl1 = (h: number) => ((h << 1) | (h >>> 31)) >>> 0;

/**
 * `source` is the original client's address (`ip` or `ip:port`, the HBONE peer): its IP is what
 * source_ip hashes; the whole of it seeds a generated cookie.
 */
export function requestHash(policies: readonly HashPolicy[] | undefined, req: RequestFacts, source: string): RequestHash {
  if (!policies?.length) return {};
  let hash: number | undefined;
  let setCookie: string | undefined;
  for (const p of policies) {
    let input: string | undefined;
    if ('header' in p) {
      const v = p.header === ':authority' ? req.host : p.header === ':path' ? req.path : req.headers[p.header];
      input = Array.isArray(v) ? v.join(',') : v;
    } else if ('query' in p) input = req.query.get(p.query) ?? undefined;
    else if ('sourceIp' in p) input = source.replace(/^\[?([^\]]*?)\]?(?::\d+)?$/, '$1') || undefined;
    else {
      input = cookieValue(req.headers.cookie, p.cookie.name);
      if (input === undefined && p.cookie.ttlMs !== undefined) {
        input = createHash('sha256').update(source).digest('hex').slice(0, 16);
        const maxAge = Math.floor(p.cookie.ttlMs / 1000);
        setCookie = `${p.cookie.name}="${input}"${maxAge ? `; Max-Age=${maxAge}` : ''}${p.cookie.path ? `; Path=${p.cookie.path}` : ''}; HttpOnly`;
      }
    }
    if (input === undefined) continue;
    const h = hash32(input);
    hash = hash === undefined ? h : (rotl1(hash) ^ h) >>> 0;
    if (p.terminal) break;
  }
  return { ...(hash !== undefined ? { hash } : {}), ...(setCookie ? { setCookie } : {}) };
}
