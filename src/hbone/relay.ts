// Copies bytes both ways between two sockets until both directions are done, honouring half-close.
// Byte counts come from the sockets' own counters at the end: nothing is done per chunk.
import type { Socket } from 'node:net';
import { RELAY_BUFFER, forward, setHighWaterMark } from './forward.ts';

export interface RelayResult {
  /** Bytes from the downstream (client) side to upstream, and back. */
  sent: number;
  received: number;
  error?: string;
}

export function relay(down: Socket, up: Socket): Promise<RelayResult> {
  return new Promise((resolve) => {
    let error: string | undefined;
    let closed = 0;
    const onClose = () => {
      if (++closed === 2) resolve({ sent: up.bytesWritten, received: down.bytesWritten, error });
    };
    const onError = (side: string) => (e: NodeJS.ErrnoException) => {
      error ??= `${side}: ${e.code ?? e.message}`;
      // A reset on one side becomes a reset on the other, as a kernel-level proxy would show it.
      down.resetAndDestroy();
      up.resetAndDestroy();
    };
    down.on('error', onError('downstream'));
    up.on('error', onError('upstream'));
    down.on('close', onClose);
    up.on('close', onClose);
    setHighWaterMark(down, RELAY_BUFFER);
    setHighWaterMark(up, RELAY_BUFFER);
    forward(down, up);
    forward(up, down);
    down.resume();
  });
}
