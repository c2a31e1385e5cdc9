// The CONNECT target: a literal `ip:port` (IPv6 in brackets). Hostnames are refused: the server only
// dials addresses, and a hostname here would need DNS on the data path.
import { SocketAddress, isIPv4, isIPv6 } from 'node:net';

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
  if (m[1] !== undefined) {
    if (!isIPv6(m[1]) || m[1].includes('%')) return undefined; // a zone id names an interface of the peer's host
    // One text per address (the form sockets and the workload API use), so "[FD00:0::1]" is the
    // pod fd00::1; an IPv4-mapped target is the IPv4 address it maps.
    const address = new SocketAddress({ address: m[1], family: 'ipv6' }).address;
    return { address: /^::ffff:\d+\.\d+\.\d+\.\d+$/.test(address) ? address.slice(7) : address, port };
  }
  return isIPv4(m[2]!) ? { address: m[2]!, port } : undefined;
}

export function formatAuthority(a: Authority): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
