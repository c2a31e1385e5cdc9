// Inbound HBONE: the callbacks a pod's HBONE server (src/hbone) calls for each CONNECT on 15008.
// Authorize the authenticated peer (authorize.ts: also refuses a peer that skipped the pod's own
// waypoint, 401), dial the app from inside the pod; the server relays and reports how it ended.
import { formatSpiffe } from '../../../api/spiffe.ts';
import type { HboneHandlers } from '../../../hbone/index.ts';
import { Connection } from '../connection.ts';
import type { ProxyContext } from '../context.ts';
import { authorize } from '../authorize.ts';
import type { ProxyPod } from '../types.ts';
import { dialFromPod } from '../pod-sockets.ts';
import { ipOf } from '../../../util/peer-ip.ts';

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
