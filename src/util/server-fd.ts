// The fd under a listening net.Server (its libuv handle's): what a handover passes on.
import type { Server } from 'node:net';

export function serverFd(server: Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('server is not listening on a file descriptor');
  return fd;
}
