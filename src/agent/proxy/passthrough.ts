// Captured connections relayed in plaintext to where they were going: decide (find the original
// destination), then act (dial it from inside the pod, copy bytes). HBONE replaces the act step
// for mesh destinations once identities exist.
import type { Socket } from 'node:net';
import { WEFT } from '../../bpf/index.ts';
import type { Endpoint, PodCaptureHandle } from '../capture/backend.ts';
import type { Direction } from '../metrics/metrics.ts';
import { Connection, type ConnContext } from './connection.ts';
import { dialFromPod } from './pod-sockets.ts';
import { relay } from './relay.ts';

export interface ProxyPod {
  namespace: string;
  name: string;
  netnsFd: number;
  capture: PodCaptureHandle;
}

export async function handleCaptured(ctx: ConnContext, pod: ProxyPod, direction: Direction, client: Socket): Promise<void> {
  const conn = new Connection(ctx, direction, pod, client);
  client.on('error', () => {}); // reported through the relay or the guard below
  let dst: Endpoint | undefined;
  try {
    dst = direction === 'outbound' ? pod.capture.outboundOriginalDst(client) : pod.capture.inboundOriginalDst(client);
  } catch (e) {
    client.resetAndDestroy();
    return conn.finish({ sent: 0, received: 0, error: `original destination: ${(e as Error).message}` });
  }
  if (!dst) {
    client.resetAndDestroy();
    return conn.finish({ sent: 0, received: 0, error: 'no original destination (connection was not captured)' });
  }
  if (dst.port === WEFT.PORT_OUTBOUND || dst.port === WEFT.PORT_INBOUND) {
    // Someone dialled a capture port directly: relaying would loop back into the agent.
    client.resetAndDestroy();
    return conn.finish({ sent: 0, received: 0, error: `connection to the agent's own port ${dst.port} refused` });
  }
  conn.dst = dst;
  let upstream: Socket;
  try {
    upstream = await dialFromPod(pod.netnsFd, dst);
  } catch (e) {
    client.resetAndDestroy(); // the app sees its connect fail as it would without the mesh
    return conn.finish({ sent: 0, received: 0, error: `connect ${dst.address}:${dst.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
  }
  conn.finish(await relay(client, upstream));
}
