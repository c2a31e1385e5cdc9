// What RBAC matchers read, from an HTTP request (FilterRequest) or a connection at CONNECT
// (ConnectionFacts), without copying either: one predicate type serves both filters, and a
// matcher that needs HTTP (headers, paths, metadata) never matches a connection, as in Envoy's
// network RBAC filter.
import { BlockList } from 'node:net';
import type { ConnectionFacts, FilterRequest } from '../chain.ts';
import type { Msg } from '../../xds/envoy.ts';

export type Facts = FilterRequest | ConnectionFacts;
export type Pred = (f: Facts) => boolean;

export const isHttp = (f: Facts): f is FilterRequest => (f as FilterRequest).method !== undefined;

/**
 * A request header as Envoy's HeaderMatcher reads it: pseudo-headers from the request line
 * (`:path` is the path with its query, as Envoy's :path header), repeated headers joined by commas.
 */
export function headerOf(r: FilterRequest, name: string): string | undefined {
  if (name.charCodeAt(0) === 0x3a) {
    if (name === ':method') return r.method;
    if (name === ':path') return r.url;
    if (name === ':authority') return r.host;
    if (name === ':scheme') return r.scheme;
    return undefined;
  }
  const v = r.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** The port of an `ip:port` authority, read in place. */
export function portOf(authority: string): number {
  let n = 0;
  for (let i = authority.lastIndexOf(':') + 1; i > 0 && i < authority.length; i++) {
    const d = authority.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** The original destination's IP: the CONNECT authority's address. */
export const destinationIpOf = (f: Facts): string => (isHttp(f) ? f.destination.slice(0, f.destination.lastIndexOf(':')).replace(/^\[|\]$/g, '') : f.destinationIp);

/** The peer's principal as a URI SAN (`spiffe://...`), what Envoy's authenticated.principal_name matches. */
export const uriSanOf = (f: Facts): string => (f.peerPrincipal.startsWith('spiffe://') || !f.peerPrincipal ? f.peerPrincipal : `spiffe://${f.peerPrincipal}`);

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);

/** Envoy's CidrRange (address_prefix, prefix_len; unset prefix_len is 0), as a predicate on an IP. */
export function cidrMatcher(m: Msg, field: string): (ip: string) => boolean {
  const address = typeof m.addressPrefix === 'string' ? m.addressPrefix : '';
  const len = Number(obj(m.prefixLen)?.value ?? 0);
  const v6 = address.includes(':');
  if (!address) throw new Error(`${field}.address_prefix: empty`);
  const list = new BlockList();
  try {
    if (!Number.isInteger(len) || len < 0 || len > (v6 ? 128 : 32)) throw new Error(`prefix_len ${len} out of range`);
    list.addSubnet(address, len, v6 ? 'ipv6' : 'ipv4');
  } catch (e) {
    throw new Error(`${field}: ${address}/${len} is not a CIDR range: ${(e as Error).message}`, { cause: e });
  }
  return (ip) => {
    if (!ip) return false;
    // An IPv4-mapped IPv6 address is the IPv4 address it carries.
    const addr = ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
    const family = addr.includes(':') ? 'ipv6' : 'ipv4';
    if ((family === 'ipv6') !== v6) return false;
    try {
      return list.check(addr, family);
    } catch {
      return false;
    }
  };
}
