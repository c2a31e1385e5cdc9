// IP prefixes as text, one spelling for both sides: the control plane writes a CIDR's network as a
// rate-limit descriptor value and the waypoint masks a client address to compare with it, so both
// must print the same address the same way (IPv4 dotted, IPv6 as the WHATWG URL parser compresses it).
import { isIP } from 'node:net';

export interface Cidr {
  /** The network address, masked, in canonical text. */
  network: string;
  prefixLen: number;
  v6: boolean;
}

function v4Bytes(ip: string): number[] {
  return ip.split('.').map(Number);
}

function v6Bytes(ip: string): number[] {
  let s = ip.replace(/%.*$/, '');
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = v4Bytes(v4[1]!);
    s = `${s.slice(0, v4.index)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}

function format(bytes: number[], v6: boolean): string {
  if (!v6) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

function mask(bytes: number[], len: number): number[] {
  return bytes.map((b, i) => {
    const bits = Math.max(0, Math.min(8, len - i * 8));
    return b & ((0xff << (8 - bits)) & 0xff);
  });
}

/** An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as the IPv4 address it carries; other addresses unchanged. */
// Most addresses are plain IPv4, so no regex for them: the agent unmaps every captured connection's peer.
export const unmapV4 = (ip: string): string => (ip.charCodeAt(0) === 58 /* ':' */ && /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip) ? ip.slice(7) : ip);

/** Parses `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128); undefined when invalid. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const ip = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(ip);
  if (!family) return undefined;
  const v6 = family === 6;
  const max = v6 ? 128 : 32;
  const lenText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) return undefined;
  const prefixLen = Number(lenText);
  return { network: format(mask(v6 ? v6Bytes(ip) : v4Bytes(ip), prefixLen), v6), prefixLen, v6 };
}

/** `ip` masked to `len` bits, as `network/len` (Envoy's masked_remote_address descriptor value); undefined for another family. */
export function maskedAddress(ip: string, v4Len: number | undefined, v6Len: number | undefined): string | undefined {
  const addr = unmapV4(ip);
  const family = isIP(addr);
  if (family === 4) {
    const len = v4Len ?? 32;
    return `${format(mask(v4Bytes(addr), len), false)}/${len}`;
  }
  if (family === 6) {
    const len = v6Len ?? 128;
    return `${format(mask(v6Bytes(addr), len), true)}/${len}`;
  }
  return undefined;
}
