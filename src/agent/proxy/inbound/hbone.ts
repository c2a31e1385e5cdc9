// Inbound HBONE: the callbacks a pod's HBONE server (src/hbone) calls for each CONNECT on 15008.
// Authorize the authenticated peer (authorize.ts: also refuses a peer that skipped the pod's own
// waypoint, 401), then have the server dial the app with a socket made inside the pod (a `dial`
// decision: the native relay connects it on its own thread); the server relays and reports how it
// ended, a failed dial included (`reason`, flag CONNECT).
import { formatSpiffe } from '../../../api/spiffe.ts';
import { dialFailure, type HboneHandlers } from '../../../hbone/index.ts';
import { Connection } from '../connection.ts';
import type { ProxyContext } from '../context.ts';
import { authorize } from '../authorize.ts';
import type { ProxyPod } from '../types.ts';
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
      const { address, port } = req.authority;
      let fd: number;
      try {
        fd = pod.sockets.take(address.includes(':') ? 6 : 4);
      } catch (e) {
        rec.flag = 'CONNECT';
        return { status: 503, reason: dialFailure(req.authority, (e as NodeJS.ErrnoException).code ?? (e as Error).message) };
      }
      return { status: 200, dial: { fd, address, port } };
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
