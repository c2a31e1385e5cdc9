// The CONNECT target: a literal `ip:port` (IPv6 in brackets). Hostnames are refused: the server only
// dials addresses, and a hostname here would need DNS on the data path.
import { isIPv4, isIPv6 } from 'node:net';

export interface Authority {
  address: string;
  port: number;
}

const HOST_PORT = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/;

export function parseAuthority(s: string | undefined): Authority | undefined {
  const m = s ? HOST_PORT.exec(s) : null;
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  // isIPv6 also takes a zone (`fe80::1%eth0`): a peer must not pick the interface we dial out of.
  if (m[1] !== undefined) return isIPv6(m[1]) && !m[1].includes('%') ? { address: m[1], port } : undefined;
  return isIPv4(m[2]!) ? { address: m[2]!, port } : undefined;
}

export function formatAuthority(a: Authority): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
