// Inbound: mirrors outbound. Parse (HBONE CONNECT, or a plaintext connection captured on 15006),
// look up the destination workload, authorize, dial the app from inside the pod, copy.
import type { Socket } from 'node:net';
import { formatSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import type { Workload } from '../../api/mesh.ts';
import { WEFT } from '../../bpf/consts.ts';
import type { Endpoint } from '../capture/backend.ts';
import { Connection } from './connection.ts';
import type { ProxyContext } from './context.ts';
import type { HboneHandlers } from '../../hbone/index.ts';
import type { ProxyPod } from './outbound.ts';
import { dialFromPod } from './pod-sockets.ts';

type Verdict = { ok: true; dst: Workload; audit: string[] } | { ok: false; reason: string; policy?: string; dst?: Workload };

/** The agent's own ports, as ztunnel's illegal_ports (plus its admin ports, which Istio reserves too). */
export const DEFAULT_AGENT_PORTS: ReadonlySet<number> = new Set([WEFT.PORT_OUTBOUND, WEFT.PORT_INBOUND, WEFT.PORT_HBONE, 15000, 15020, 15021]);

/**
 * Who may reach this pod at `dst`: the destination must be this pod and known to the mesh state,
 * and not one of the agent's ports. Delivering to those would be the agent connecting to itself:
 * under iptables capture a plaintext connection to podIP:15006 is dialled back to 15006 and again,
 * without end; a CONNECT to podIP:15008 nests a second HBONE session whose peer address is the pod
 * itself, so source-IP rules would judge the pod instead of the real client.
 */
export function authorize(ctx: ProxyContext, pod: ProxyPod, dst: Endpoint, src: { identity?: SpiffeId; ip: string }): Verdict {
  if ((ctx.agentPorts ?? DEFAULT_AGENT_PORTS).has(dst.port)) return { ok: false, reason: `destination port ${dst.port} is the agent's own (self-call refused)` };
  if (!pod.ips.includes(dst.address)) return { ok: false, reason: `destination ${dst.address} is not pod ${pod.namespace}/${pod.name}` };
  const state = ctx.state();
  const w = state.workloadsByIp.get(dst.address);
  if (!w) return { ok: false, reason: `destination ${dst.address} is not (yet) in the mesh state` };
  const d = ctx.engine(state).evaluate({ srcIdentity: src.identity, srcIp: src.ip, dstIp: dst.address, dstPort: dst.port }, w);
  return d.allowed ? { ok: true, dst: w, audit: d.audit } : { ok: false, reason: 'denied by authorization policy', policy: d.policy, dst: w };
}

const ipOf = (hostPort: string) => hostPort.replace(/^\[?([^\]]*)\]?:\d+$/, '$1').replace(/^::ffff:/, '');

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
  // Capture never steers a pod's own connections to it (loopback and pod-to-self stay in the pod),
  // so one arriving here from the pod's own address is the agent's own dial coming back: refuse it
  // before anything is dialled, whatever the destination.
  if (pod.ips.includes(srcIp)) return fail(`connection from the pod's own address ${srcIp} was not captured (self-call refused)`, 'NR');
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

/** The HBONE server's callbacks for one pod: authorize each CONNECT, then dial the app. */
export function hboneHandlers(ctx: ProxyContext, pod: ProxyPod): Required<HboneHandlers> {
  const pending = new WeakMap<object, { conn: Connection; audit: string[]; policy?: string; flag?: string }>();
  return {
    async onConnect(req) {
      const conn = new Connection(ctx, 'inbound', pod, req.peerAddress);
      conn.dst = req.authority;
      const srcIp = ipOf(req.peerAddress);
      const v = authorize(ctx, pod, req.authority, { identity: req.peer, ip: srcIp });
      conn.decided({ src: ctx.state().workloadsByIp.get(srcIp), dst: v.dst, srcPrincipal: formatSpiffe(req.peer), mtls: true });
      const rec = { conn, audit: v.ok ? v.audit : [], policy: v.ok ? undefined : v.policy, flag: undefined as string | undefined };
      pending.set(req.stream, rec);
      if (!v.ok) {
        rec.flag = v.policy ? 'DENY' : 'NR';
        return { status: v.policy ? 401 : 400, reason: v.reason };
      }
      try {
        return { status: 200, upstream: await dialFromPod(pod.sockets, req.authority, undefined, req.signal) };
      } catch (e) {
        rec.flag = 'CONNECT';
        return { status: 503, reason: `connect ${req.authority.address}:${req.authority.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
      }
    },
    onComplete(o) {
      const rec = pending.get(o.stream);
      const conn = rec?.conn ?? new Connection(ctx, 'inbound', pod, o.peerAddress);
      const failed = o.status !== 200 || !!o.error;
      conn.finish({
        sent: o.sent,
        received: o.received,
        error: failed ? (o.reason ?? o.error ?? `HTTP ${o.status}`) : undefined,
        flag: failed ? (rec?.flag ?? 'CONNECT') : undefined,
        policy: rec?.policy,
        audit: rec?.audit,
      });
    },
  };
}
