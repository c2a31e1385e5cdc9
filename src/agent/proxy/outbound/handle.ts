// A connection captured on 15001: decide with planOutbound (plan.ts), then act — HBONE to a mesh
// workload (the node-local fast path, node-local/, when it is enrolled on this node) or to the
// waypoint in front of it (never node-local: the waypoint must see it), plaintext to anything else,
// a reset when there is nowhere to go.
import type { Socket } from 'node:net';
import { AcceptedFd } from '../../../hbone/native/listener.ts';
import { formatSpiffe } from '../../../api/spiffe.ts';
import { WEFT } from '../../../bpf/consts.ts';
import type { Endpoint } from '../../capture/backend.ts';
import { Connection } from '../connection.ts';
import { UNKNOWN_POD_WAIT_MS, podIdentity, type ProxyContext } from '../context.ts';
import { HboneError, formatAuthority } from '../../../hbone/index.ts';
import { handleNodeLocal } from '../node-local/handle.ts';
import { planOutbound, sameFamily } from './plan.ts';
import { dialFromPod } from '../pod-sockets.ts';
import type { ProxyPod } from '../types.ts';
import { traceparent } from './traceparent.ts';

const isAgentPort = (p: number) => p === WEFT.PORT_OUTBOUND || p === WEFT.PORT_INBOUND;

/**
 * The app's end of a captured connection: a Node socket (--data-path node), or the fd the relay
 * thread accepted (native), which becomes a Node socket only on the routes that relay from one.
 */
export type OutboundClient = Socket | AcceptedFd;

const reset = (c: OutboundClient) => (c instanceof AcceptedFd ? c.reset() : c.resetAndDestroy());
const asSocket = (c: OutboundClient): Socket => (c instanceof AcceptedFd ? c.toSocket() : c);

export async function handleOutbound(ctx: ProxyContext, pod: ProxyPod, client: OutboundClient): Promise<void> {
  if (!(client instanceof AcceptedFd)) client.on('error', () => {});
  let orig: Endpoint | string;
  try {
    orig = pod.capture.outboundOriginalDst(client) ?? 'no original destination (connection was not captured)';
  } catch (e) {
    orig = `original destination: ${(e as Error).message}`;
  }
  return proxyOutbound(ctx, pod, client, orig);
}

/** A pod as the outbound path uses it once the capture has answered: no capture handle. */
export type OutboundPod = Omit<ProxyPod, 'capture'>;

/**
 * The rest of handleOutbound, once the capture said where the connection was going (or, as a
 * string, why it cannot tell): decide, then act. Apart so it runs on any socket, not only a captured one.
 */
export async function proxyOutbound(ctx: ProxyContext, pod: OutboundPod, client: OutboundClient, orig: Endpoint | string): Promise<void> {
  if (!(client instanceof AcceptedFd)) client.on('error', () => {});
  // The app connected from inside the pod to 127.0.0.1 or [::1]:15001; its real source is the
  // pod's address of the family it dialled (what the kernel would have picked without capture).
  const srcIp = sameFamily(pod.ips, typeof orig === 'string' ? '' : orig.address) ?? '';
  const conn = new Connection(ctx, 'outbound', pod, formatAuthority({ address: srcIp, port: client.remotePort ?? 0 }));
  const fail = (error: string, flag: string) => {
    reset(client); // the app sees what it would without a mesh: a reset
    conn.finish({ sent: 0, received: 0, error, flag });
  };
  if (typeof orig === 'string') return fail(orig, 'NR');
  if (isAgentPort(orig.port)) return fail(`connection to the agent's own port ${orig.port} refused`, 'NR');
  // Before the first state every destination looks unknown, and unknown means passthrough.
  if (ctx.synced && !ctx.synced()) return fail('no mesh state yet (not synced with the control plane)', 'NR');
  conn.dst = orig;
  let state = ctx.state();
  let src = pod.ips.map((ip) => state.workloadsByIp.get(ip)).find(Boolean);
  let plan = planOutbound(state, orig, undefined, src);
  // A pod-network address the state does not know: a pod this node has not heard of yet (new, or
  // the control plane is away). Passed through, a mesh pod's traffic would cross in clear: wait a
  // moment for the state, then refuse.
  const unknownPod = (p: typeof plan) => p.kind === 'passthrough' && !p.dst && !p.service && !!ctx.podNetwork?.check(orig.address, orig.address.includes(':') ? 'ipv6' : 'ipv4');
  for (const end = Date.now() + UNKNOWN_POD_WAIT_MS; unknownPod(plan) && Date.now() < end && !client.destroyed; ) {
    await new Promise((r) => setTimeout(r, 100));
    state = ctx.state();
    src = pod.ips.map((ip) => state.workloadsByIp.get(ip)).find(Boolean);
    plan = planOutbound(state, orig, undefined, src);
  }
  if (unknownPod(plan)) {
    conn.decided({ src });
    return fail(`${orig.address} is in the pod network but not in the mesh state (a pod this node has not been told about): refused rather than sent in plaintext`, 'NR');
  }
  if (plan.kind === 'refuse') {
    conn.decided({ src, service: plan.service });
    return fail(plan.reason, 'NR');
  }
  if (plan.kind === 'passthrough') {
    conn.decided({ src, dst: plan.dst, service: plan.service });
    let upstream: Socket;
    try {
      upstream = await dialFromPod(pod.sockets, plan.target);
    } catch (e) {
      return fail(`connect ${plan.target.address}:${plan.target.port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'CONNECT');
    }
    return conn.finish(await ctx.relay(asSocket(client), upstream));
  }
  // HBONE: mutual TLS to the destination's node agent, identity checked against workload state.
  const srcId = podIdentity(ctx, pod);
  conn.decided({ src, dst: plan.dst, service: plan.service, srcPrincipal: formatSpiffe(srcId), dstPrincipal: plan.dstIdentity, mtls: true });
  if (!ctx.certs) return fail('no certificate source: the agent runs without a control plane', 'TLS_FAILURE');
  // Through a waypoint, target is the original destination, maybe a pod on this node: still HBONE to the waypoint.
  const local = plan.waypoint ? undefined : ctx.localPods?.get(plan.target.address);
  if (local) return handleNodeLocal(ctx, { src: pod, srcIp, srcIdentity: srcId, srcWorkload: src, dst: local, target: plan.target, client: asSocket(client), outbound: conn });
  conn.hboneAddr = formatAuthority(plan.hbone);
  const authority = formatAuthority(plan.target);
  try {
    const cert = await ctx.certs.get(srcId);
    const t = await ctx.pool.connect({
      key: { scope: pod.uid, srcIdentity: formatSpiffe(srcId), dstIdentity: plan.dstIdentity, dstAddress: plan.hbone.address },
      port: plan.hbone.port,
      authority,
      headers: {
        forwarded: `for="${conn.src}"${plan.service ? `;host=${plan.service.hostname}` : ''}`,
        baggage: `k8s.cluster.name=${src?.clusterId ?? 'Kubernetes'},k8s.namespace.name=${pod.namespace},k8s.pod.name=${pod.name},service.name=${src?.canonicalName ?? pod.name},service.version=${src?.canonicalRevision ?? 'latest'}`,
        traceparent: traceparent(),
      },
      credentials: { key: cert.keyPem, certChain: cert.certChainPem, root: cert.rootPem },
      dial: () => dialFromPod(pod.sockets, plan.hbone),
      // Early attach: the native relay relays from it as soon as the 200 arrives. Still ours until
      // relay() below: a refusal resets it here as before.
      appFd: client instanceof AcceptedFd ? client.fd : undefined,
    });
    // An accepted fd goes to the tunnel as it is: on the native relay no Node socket is ever made for it.
    const r = await t.relay(client instanceof AcceptedFd ? client.take() : client);
    conn.finish({ sent: r.sent, received: r.received, error: r.error });
  } catch (e) {
    const err = e as HboneError & NodeJS.ErrnoException;
    const flag = err.status === 401 ? 'DENY' : err.kind === 'tls' ? 'TLS_FAILURE' : 'CONNECT';
    fail(`hbone ${conn.hboneAddr} (${authority}): ${err.status ? `HTTP ${err.status}: ` : ''}${err.message}`, flag);
  }
}
