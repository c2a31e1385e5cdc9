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
import type { ExpressOut } from '../../../hbone/native/addon.ts';
import { ExpressHandedBack, adoptExpress } from '../../../hbone/native/client.ts';
import type { OutboundReuse } from '../../../hbone/pool.ts';
import { CONNECT_TIMEOUT_MS } from '../../../hbone/settings.ts';
import type { Workload } from '../../../api/mesh.ts';
import type { GrantedDecision } from './grants.ts';
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
    // The relay thread may have taken it from the capture's map already (an express listener).
    orig = (client instanceof AcceptedFd ? client.orig : undefined) ?? pod.capture.outboundOriginalDst(client) ?? 'no original destination (connection was not captured)';
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
  // How many outcomes the plan chose among: a decision with more than one is never granted.
  let choices = 1;
  const pick = (n: number) => {
    choices *= n;
    return Math.floor(Math.random() * n);
  };
  let plan = planOutbound(state, orig, pick, src);
  // A pod-network address the state does not know: a pod this node has not heard of yet (new, or
  // the control plane is away). Passed through, a mesh pod's traffic would cross in clear: wait a
  // moment for the state, then refuse.
  const unknownPod = (p: typeof plan) => p.kind === 'passthrough' && !p.dst && !p.service && !!ctx.podNetwork?.check(orig.address, orig.address.includes(':') ? 'ipv6' : 'ipv4');
  for (const end = Date.now() + UNKNOWN_POD_WAIT_MS; unknownPod(plan) && Date.now() < end && !client.destroyed; ) {
    await new Promise((r) => setTimeout(r, 100));
    state = ctx.state();
    src = pod.ips.map((ip) => state.workloadsByIp.get(ip)).find(Boolean);
    choices = 1;
    plan = planOutbound(state, orig, pick, src);
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
  const d: GrantedDecision = { plan, src, srcId, srcIp, forwarded: forwardedFor(srcIp, plan.service), headers: ['baggage', baggage(pod, src)] };
  const generation = ctx.grants?.observe(state); // what a grant of this decision stands for
  const reuse = client instanceof AcceptedFd ? ctx.outGrants?.offer(client, (pod as Partial<ProxyPod>).capture, orig, generation, d, choices) : undefined;
  return tunnel(ctx, pod, client, conn, d, reuse);
}

/** `forwarded: for="<source>"` with the app's port in between: [before, after]. */
const forwardedFor = (srcIp: string, service?: { hostname: string }): [string, string] =>
  [`for="${srcIp.includes(':') ? `[${srcIp}]` : srcIp}:`, `"${service ? `;host=${service.hostname}` : ''}`];

const baggage = (pod: OutboundPod, src?: Workload) =>
  `k8s.cluster.name=${src?.clusterId ?? 'Kubernetes'},k8s.namespace.name=${pod.namespace},k8s.pod.name=${pod.name},service.name=${src?.canonicalName ?? pod.name},service.version=${src?.canonicalRevision ?? 'latest'}`;

/** The CONNECT's failure as the access log and metrics name it. */
function tunnelFailure(conn: Connection, authority: string, e: unknown): { error: string; flag: string } {
  const err = e as HboneError & NodeJS.ErrnoException;
  const flag = err.status === 401 ? 'DENY' : err.kind === 'tls' ? 'TLS_FAILURE' : 'CONNECT';
  return { error: `hbone ${conn.hboneAddr} (${authority}): ${err.status ? `HTTP ${err.status}: ` : ''}${err.message}`, flag };
}

/** The decided HBONE route: a CONNECT on a pooled session, then the relay until either end closes. */
async function tunnel(ctx: ProxyContext, pod: OutboundPod, client: OutboundClient, conn: Connection, d: GrantedDecision, reuse?: OutboundReuse): Promise<void> {
  const { plan } = d;
  conn.hboneAddr = formatAuthority(plan.hbone);
  const authority = formatAuthority(plan.target);
  try {
    const cert = await ctx.certs!.get(d.srcId);
    const headers: Record<string, string> = { forwarded: `${d.forwarded[0]}${client.remotePort ?? 0}${d.forwarded[1]}` };
    for (let i = 0; i + 1 < d.headers.length; i += 2) headers[d.headers[i]!] = d.headers[i + 1]!;
    headers.traceparent = traceparent();
    const t = await ctx.pool.connect({
      key: { scope: pod.uid, srcIdentity: formatSpiffe(d.srcId), dstIdentity: plan.dstIdentity, dstAddress: plan.hbone.address },
      port: plan.hbone.port,
      authority,
      headers,
      credentials: { key: cert.keyPem, certChain: cert.certChainPem, root: cert.rootPem },
      dial: () => dialFromPod(pod.sockets, plan.hbone),
      // Early attach: the native relay relays from it as soon as the 200 arrives. Still ours until
      // relay() below: a refusal resets it here as before.
      appFd: client instanceof AcceptedFd ? client.fd : undefined,
      reuse,
    });
    // An accepted fd goes to the tunnel as it is: on the native relay no Node socket is ever made for it.
    const r = await t.relay(client instanceof AcceptedFd ? client.take() : client);
    conn.finish({ sent: r.sent, received: r.received, error: r.error });
  } catch (e) {
    reset(client); // the app sees what it would without a mesh: a reset
    conn.finish({ sent: 0, received: 0, ...tunnelFailure(conn, authority, e) });
  }
}

/**
 * A connection the relay thread opened on a grant (grants.ts): its record, from what the granted
 * decision found, and its end. A stream the peer refused unprocessed comes back with its socket,
 * which takes the usual route from the CONNECT on.
 */
export function handleExpressOutbound(ctx: ProxyContext, pod: OutboundPod, x: ExpressOut): void {
  ctx.metrics.reusedDecision('outbound');
  let d = ctx.outGrants?.record(x.tag);
  if (!d) {
    // The record is gone (the state moved on as the connection arrived): what the state says now.
    const state = ctx.state();
    const src = pod.ips.map((ip) => state.workloadsByIp.get(ip)).find(Boolean);
    const plan = planOutbound(state, x.orig, undefined, src);
    const srcIp = sameFamily(pod.ips, x.orig.address) ?? '';
    if (plan.kind === 'hbone') d = { plan, src, srcId: podIdentity(ctx, pod), srcIp, forwarded: forwardedFor(srcIp, plan.service), headers: ['baggage', baggage(pod, src)] };
  }
  const conn = new Connection(ctx, 'outbound', pod, formatAuthority({ address: d?.srcIp ?? sameFamily(pod.ips, x.orig.address) ?? '', port: x.port }));
  conn.dst = x.orig;
  if (d) conn.decided({ src: d.src, dst: d.plan.dst, service: d.plan.service, srcPrincipal: formatSpiffe(d.srcId), dstPrincipal: d.plan.dstIdentity, mtls: true });
  else conn.decided({ mtls: true });
  const authority = d ? formatAuthority(d.plan.target) : formatAuthority(x.orig);
  if (d) conn.hboneAddr = formatAuthority(d.plan.hbone);
  adoptExpress(ctx.pool, x, authority, CONNECT_TIMEOUT_MS).then(
    (r) => conn.finish({ sent: r.sent, received: r.received, error: r.error }),
    (e) => {
      if (e instanceof ExpressHandedBack) {
        const client = new AcceptedFd(e.fd, x.address, x.port, 0, x.orig);
        if (d) return void tunnel(ctx, pod, client, conn, d);
        client.reset();
      }
      conn.finish({ sent: 0, received: 0, ...tunnelFailure(conn, authority, e) });
    },
  );
}
