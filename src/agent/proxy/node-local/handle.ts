// The node-local fast path (ztunnel's "DirectLocal"): when a captured connection's destination is
// a mesh pod enrolled on this same agent, HBONE would only carry it from this process back to
// itself. The agent already holds both ends' identities (the source pod is the one whose listener
// accepted the connection; the destination is in its own pod table), so it applies the
// destination's inbound authorization itself and dials the app from inside the destination pod:
// one plaintext relay hop between two sockets of this process, never on any link, instead of two
// hops with TLS and HTTP/2 in between. Both sides are reported as Istio reports them for HBONE
// (source and destination reporter, mutual_tls), and the access log says node_local. The pods
// enrolled here are found in the registry local-pods.ts. Never a way past a waypoint: the outbound
// path sends waypoint-bound traffic to the waypoint before it looks here, and authorize() refuses a
// source that is not the destination's waypoint when the destination has one.
import type { Socket } from 'node:net';
import { formatSpiffe, type SpiffeId } from '../../../api/spiffe.ts';
import type { Workload } from '../../../api/mesh.ts';
import type { Endpoint } from '../../capture/backend.ts';
import { Connection } from '../connection.ts';
import type { ProxyContext } from '../context.ts';
import { formatAuthority } from '../../../hbone/authority.ts';
import { authorize } from '../authorize.ts';
import type { ProxyPod } from '../types.ts';
import { dialFromPod } from '../pod-sockets.ts';

export interface NodeLocalRequest {
  src: Omit<ProxyPod, 'capture'>;
  /** The source pod's address of the connection's family. */
  srcIp: string;
  srcIdentity: SpiffeId;
  srcWorkload?: Workload;
  /** The enrolled pod holding the destination address. */
  dst: ProxyPod;
  target: Endpoint;
  client: Socket;
  /** The outbound record, already decided; finished here. */
  outbound: Connection;
}

export async function handleNodeLocal(ctx: ProxyContext, r: NodeLocalRequest): Promise<void> {
  const srcAddr = formatAuthority({ address: r.srcIp, port: r.client.remotePort ?? 0 });
  const inbound = new Connection(ctx, 'inbound', r.dst, srcAddr);
  inbound.dst = r.target;
  inbound.nodeLocal = r.outbound.nodeLocal = true;
  const v = authorize(ctx, r.dst, r.target, { identity: r.srcIdentity, ip: r.srcIp });
  inbound.decided({ src: r.srcWorkload, dst: v.dst, srcPrincipal: formatSpiffe(r.srcIdentity), mtls: true });
  const fail = (error: string, flag: string, policy?: string) => {
    r.client.resetAndDestroy(); // what the app would see from a refused HBONE stream: a reset
    inbound.finish({ sent: 0, received: 0, error, flag, policy });
    r.outbound.finish({ sent: 0, received: 0, error, flag, policy });
  };
  if (!v.ok) return fail(v.reason, v.policy ? 'DENY' : 'NR', v.policy);
  let upstream: Socket;
  try {
    upstream = await dialFromPod(r.dst.sockets, r.target);
  } catch (e) {
    return fail(`connect ${r.target.address}:${r.target.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'CONNECT');
  }
  const res = await ctx.relay(r.client, upstream);
  inbound.finish({ ...res, audit: v.audit });
  r.outbound.finish(res);
}
