// Inbound HBONE: the callbacks a pod's HBONE server (src/hbone) calls for each CONNECT on 15008.
// Authorize the authenticated peer (authorize.ts: also refuses a peer that skipped the pod's own
// waypoint, 401), then have the server dial the app with a socket made inside the pod (a `dial`
// decision: the native relay connects it on its own thread); the server relays and reports how it
// ended, a failed dial included (`reason`, flag CONNECT). On the native relay an allowed dial is also
// granted for reuse: the same peer connection asking for the same destination is dialled by the
// relay itself until the mesh state changes (grants.ts), and onReused opens its record from what
// the decision found, so metrics and the access log read the same either way.
import type { Workload } from '../../../api/mesh.ts';
import { formatSpiffe, type SpiffeId } from '../../../api/spiffe.ts';
import { dialFailure, type HboneHandlers } from '../../../hbone/index.ts';
import { Connection } from '../connection.ts';
import type { ProxyContext } from '../context.ts';
import { authorize } from '../authorize.ts';
import type { ProxyPod } from '../types.ts';
import { ipOf } from '../../../util/peer-ip.ts';

/** What an allowed decision found, kept with its grant for the connections that reuse it. */
interface Allowed {
  src?: Workload;
  dst?: Workload;
  audit: string[];
}

/** The HBONE server's callbacks for one pod: authorize each CONNECT, then dial the app. */
export function hboneHandlers(ctx: ProxyContext, pod: ProxyPod): Required<HboneHandlers> {
  const pending = new WeakMap<object, { conn: Connection; audit: string[]; policy?: string; flag?: string }>();
  const decide = (authority: { address: string; port: number }, peer: SpiffeId, peerAddress: string) => {
    const state = ctx.state();
    const generation = ctx.grants?.observe(state); // the generation a grant of this decision stands for
    const srcIp = ipOf(peerAddress);
    return { v: authorize(ctx, pod, authority, { identity: peer, ip: srcIp }), src: state.workloadsByIp.get(srcIp), generation };
  };
  return {
    async onConnect(req) {
      const conn = new Connection(ctx, 'inbound', pod, req.peerAddress);
      conn.dst = req.authority;
      const { v, src, generation } = decide(req.authority, req.peer, req.peerAddress);
      conn.decided({ src, dst: v.dst, srcPrincipal: formatSpiffe(req.peer), mtls: true });
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
      const allowed: Allowed = { src, dst: v.dst, audit: v.audit };
      return { status: 200, dial: { fd, address, port, ...(generation !== undefined ? { reuse: { context: allowed, generation } } : {}) } };
    },
    onReused(req, context) {
      ctx.metrics.reusedDecision('inbound');
      const conn = new Connection(ctx, 'inbound', pod, req.peerAddress);
      conn.dst = req.authority;
      let a = context as Allowed | undefined;
      if (!a) {
        // The grant's record is gone (it lapsed as the connection arrived): what the state says now, for the record.
        const { v, src } = decide(req.authority, req.peer, req.peerAddress);
        a = { src, dst: v.dst, audit: v.ok ? v.audit : [] };
      }
      conn.decided({ src: a.src, dst: a.dst, srcPrincipal: formatSpiffe(req.peer), mtls: true });
      pending.set(req.stream, { conn, audit: a.audit });
    },
    dialSockets(family, n) {
      const fds: number[] = [];
      try {
        while (fds.length < n) fds.push(pod.sockets.take(family));
      } catch {
        // none can be made now (EMFILE, say): the relay asks again, and decisions go to onConnect meanwhile
      }
      return fds;
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
