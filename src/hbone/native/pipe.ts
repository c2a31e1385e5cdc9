// The plaintext relay of the native data path (native/relay/pipe.cc): the node-local fast path,
// destinations outside the mesh and permitted plaintext inbound, on the relay thread like HBONE.
// Same contract as relay.ts: half-close passes through, a reset on one side resets the other.
import type { Socket } from 'node:net';
import type { RelayResult } from '../relay.ts';
import { openRelayPipe, socketFd } from './addon.ts';

export function nativeRelay(down: Socket, up: Socket): Promise<RelayResult> {
  const [a, b] = [socketFd(down), socketFd(up)];
  if (a < 0 || b < 0) {
    down.resetAndDestroy();
    up.resetAndDestroy();
    return Promise.resolve({ sent: 0, received: 0, error: 'socket closed before the relay started' });
  }
  return new Promise((resolve) => {
    let result: RelayResult = { sent: 0, received: 0 };
    try {
      openRelayPipe(a, b, {
        done: (_id, fromDown, fromUp, _status, error) => (result = { sent: fromDown, received: fromUp, error: error || undefined }),
        close: () => resolve(result),
      });
    } catch (e) {
      down.resetAndDestroy();
      up.resetAndDestroy();
      return resolve({ sent: 0, received: 0, error: (e as Error).message });
    }
    // The relay holds its own descriptors of both connections.
    down.destroy();
    up.destroy();
  });
}
