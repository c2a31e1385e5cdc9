// Inbound plaintext: a connection captured on 15006 (not HBONE). Look up the destination
// workload, authorize (authorize.ts), dial the app from inside the pod, copy. HBONE arriving on
// 15008 is inbound/hbone.ts.
import type { Socket } from 'node:net';
import { Connection } from '../connection.ts';
import type { ProxyContext } from '../context.ts';
import { authorize, ownAddressRefusal } from '../authorize.ts';
import type { ProxyPod } from '../types.ts';
import { dialFromPod } from '../pod-sockets.ts';
import { ipOf } from '../../../util/peer-ip.ts';

/** Plaintext arriving on 15006: allowed only where PeerAuthentication permits (PERMISSIVE). */
export async function handleInboundPlaintext(ctx: ProxyContext, pod: ProxyPod, client: Socket): Promise<void> {
  const conn = new Connection(ctx, 'inbound', pod, client);
  client.on('error', () => {});
  const fail = (error: string, flag: string, policy?: string) => {
    client.resetAndDestroy();
    conn.finish({ sent: 0, received: 0, error, flag, policy });
  };
  let dst;
  try {
    dst = pod.capture.inboundOriginalDst(client);
  } catch (e) {
    return fail(`original destination: ${(e as Error).message}`, 'NR');
  }
  if (!dst) return fail('no original destination', 'NR');
  conn.dst = dst;
  const srcIp = ipOf(conn.src);
  const own = ownAddressRefusal(pod, srcIp);
  if (own) return fail(own, 'NR');
  const v = authorize(ctx, pod, dst, { ip: srcIp });
  conn.decided({ src: ctx.state().workloadsByIp.get(srcIp), dst: v.dst });
  if (!v.ok) return fail(v.reason, v.policy ? 'DENY' : 'NR', v.policy);
  let upstream: Socket;
  try {
    upstream = await dialFromPod(pod.sockets, dst);
  } catch (e) {
    return fail(`connect ${dst.address}:${dst.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'CONNECT');
  }
  conn.finish({ ...(await ctx.relay(client, upstream)), audit: v.audit });
}
