// A connection's peer as both servers name it in outcomes and handshake errors: `ip:port`, an
// IPv4-mapped address as the IPv4 address it maps.
import type { Socket } from 'node:net';
import { formatAuthority } from '../authority.ts';

export function remoteOf(s: Socket): string {
  const ip = (s.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '');
  return ip ? formatAuthority({ address: ip, port: s.remotePort ?? 0 }) : 'unknown';
}
