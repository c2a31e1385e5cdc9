// The reference spec for CONNECT authorities, written from the RFCs and independent of
// src/hbone/authority.ts: `IPv4:port` or `[IPv6]:port`, port 1..65535 in at most five
// digits, addresses in their dotted-quad / RFC 4291 text forms, no zone identifier, no hostname;
// an IPv6 address is handed on in its one canonical text.
import fc from 'fast-check';

const DEC_OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)$/;

function refIPv4(s: string): boolean {
  const p = s.split('.');
  return p.length === 4 && p.every((x) => DEC_OCTET.test(x));
}

function refIPv6(s: string): boolean {
  const HEX = /^[0-9a-fA-F]{1,4}$/;
  let text = s;
  const last = text.lastIndexOf(':');
  if (last < 0) return false;
  const tail = text.slice(last + 1);
  if (tail.includes('.')) {
    if (!refIPv4(tail)) return false;
    text = `${text.slice(0, last + 1)}0:0`; // the dotted quad stands for two groups
  }
  const halves = text.split('::');
  const groups = (x: string) => (x === '' ? [] : x.split(':'));
  if (halves.length === 1) {
    const g = groups(text);
    return g.length === 8 && g.every((x) => HEX.test(x));
  }
  if (halves.length !== 2) return false;
  const [a, b] = [groups(halves[0]!), groups(halves[1]!)];
  return a.every((x) => HEX.test(x)) && b.every((x) => HEX.test(x)) && a.length + b.length <= 7;
}

/**
 * One text per address, as sockets print it (inet_ntop): the WHATWG URL serializer's RFC 5952 form
 * (lower case, longest zero run); an IPv4-mapped address is the IPv4 address it maps, and one whose
 * first six groups are zero ends in a dotted quad.
 */
function refCanonicalIPv6(a: string): string {
  const text = new URL(`http://[${a}]/`).hostname.slice(1, -1);
  const m = /^::(ffff:)?([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(text);
  if (!m) return text;
  const [hi, lo] = [parseInt(m[2]!, 16), parseInt(m[3]!, 16)];
  const quad = [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
  return m[1] ? quad : `::${quad}`;
}

/** The reference: what a CONNECT authority must be for the server to dial it. */
export function refAuthority(s: string): { address: string; port: number } | undefined {
  const colon = s.lastIndexOf(':');
  if (colon < 0) return undefined;
  const [host, portText] = [s.slice(0, colon), s.slice(colon + 1)];
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  if (host.startsWith('[') && host.endsWith(']')) {
    const a = host.slice(1, -1);
    return refIPv6(a) ? { address: refCanonicalIPv6(a), port } : undefined;
  }
  return refIPv4(host) ? { address: host, port } : undefined;
}

// Inputs near the boundary: real addresses and ports, then mutated a character at a time.
const octet = fc.oneof(fc.integer({ min: 0, max: 255 }).map(String), fc.constantFrom('256', '01', '00', '1000', '', '-1', ' 1', '0x1'));
const ipv4 = fc.array(octet, { minLength: 3, maxLength: 5 }).map((p) => p.join('.'));
const group = fc.oneof(fc.stringMatching(/^[0-9a-fA-F]{0,5}$/), fc.constantFrom('0', 'ffff', 'FFFF', 'g', '12345'));
const ipv6 = fc.oneof(
  fc.array(group, { minLength: 1, maxLength: 9 }).map((g) => g.join(':')),
  fc.tuple(fc.array(group, { maxLength: 7 }), fc.array(group, { maxLength: 7 })).map(([a, b]) => `${a.join(':')}::${b.join(':')}`),
  fc.tuple(fc.array(group, { maxLength: 6 }), ipv4).map(([a, v4]) => `${a.join(':')}::${v4}`),
  fc.tuple(fc.constantFrom('fe80::1', 'fd00::1', '::1'), fc.stringMatching(/^[a-z0-9.-]{0,8}$/)).map(([a, z]) => `${a}%${z}`),
);
const port = fc.oneof(fc.integer({ min: 0, max: 70000 }).map(String), fc.constantFrom('', '00080', '080', '65535', '65536', '0', '+80', '8o', '1e3', '999999'));
const host = fc.oneof(ipv4, ipv6.map((a) => `[${a}]`), ipv6, fc.constantFrom('localhost', 'cart.shop.svc', '[]', '[', ']'), fc.string({ maxLength: 12 }));
const mutate = (s: string) =>
  fc.oneof(
    fc.constant(s),
    fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 2 })).map(([i, c]) => s.slice(0, i % (s.length + 1)) + c + s.slice(i % (s.length + 1))),
    fc.nat().map((i) => s.slice(0, i % (s.length + 1)) + s.slice((i % (s.length + 1)) + 1)),
  );
const valid = fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6().map((a) => `[${a}]`)), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`);
/** CONNECT authorities: valid ones, near misses, and junk. */
export const authorityArb = fc.oneof(
  { weight: 3, arbitrary: valid },
  { weight: 2, arbitrary: valid.chain(mutate) },
  { weight: 4, arbitrary: fc.tuple(host, port).map(([h, p]) => `${h}:${p}`) },
  { weight: 2, arbitrary: fc.tuple(host, port).chain(([h, p]) => mutate(`${h}:${p}`)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }) },
);
