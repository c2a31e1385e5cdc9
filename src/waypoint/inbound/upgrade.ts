// An HTTP/1.1 request asking to switch protocols (Upgrade + Connection: upgrade). As Envoy's
// default upgrade_configs, only `websocket` is taken: routed like any request (router/plan.ts),
// sent to the endpoint over its own HBONE tunnel with the Upgrade kept, its 101 passed back, then
// the bytes relayed both ways with backpressure (pipe: nothing buffered beyond the streams'
// windows) until either side closes; a close or reset of one side ends the other. An endpoint that
// answers anything but 101 has its response passed back and the tunnel closed. Any other upgrade
// is answered 403, as Envoy does for an upgrade type it is not configured for ("upgrade_failed").
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { HboneError } from '../../hbone/errors.ts';
import { elapsedMs } from '../../telemetry/connection.ts';
import { planRequest, type Plan } from '../router/plan.ts';
import { endToEnd, openTunnel } from '../upstream/forward.ts';
import { LOCAL_BODY } from '../response-flags.ts';
import { resetWatch } from '../tcp/relay.ts';
import { filtersFor, type RequestDeps, type TunnelContext } from './request.ts';
import { normalizeUrl } from './normalize-path.ts';
import { runHttpFilters } from '../filters/chain.ts';

const head = (status: number, headers: [string, string][]): string =>
  `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;

/** Answers and closes the tunnel: its end, then its destruction (the client need not close its side). */
export function closeWith(socket: Duplex, data: string): void {
  socket.end(data);
  setTimeout(() => socket.destroy(), 1000).unref();
}

function localReply(socket: Duplex, status: number, body: string): number {
  closeWith(socket, head(status, [['content-type', 'text/plain'], ['content-length', String(Buffer.byteLength(body))], ['connection', 'close']]) + body);
  return Buffer.byteLength(body);
}

/** Pairs of a raw header list (Node's rawHeaders). */
const pairs = (raw: string[]): [string, string][] => {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
};

export async function handleUpgrade(deps: RequestDeps, ctx: TunnelContext, req: IncomingMessage, socket: Duplex, early: Buffer): Promise<void> {
  const start = process.hrtime.bigint();
  const startTime = new Date();
  socket.on('error', () => {});
  const host = String(req.headers.host ?? '');
  const url = normalizeUrl(req.url ?? '/');
  const q = url.indexOf('?');
  const mesh = deps.mesh();
  const src = mesh.workload(ctx.peerIp);
  const requestId = String(req.headers['x-request-id'] ?? '') || randomUUID();
  const service = 'service' in ctx.target ? ctx.target.service : undefined;
  let plan: Plan | undefined;
  let status = 0;
  let flags = '-';
  let details: string | undefined;
  let received = early.length;
  let sent = 0;
  const record = () =>
    deps.telemetry.record({
      startTime, method: req.method ?? '', path: url, protocol: `HTTP/${req.httpVersion}`, authority: host, responseCode: status, responseFlags: flags, details,
      bytesReceived: received, bytesSent: sent, durationMs: elapsedMs(start),
      upstreamHost: plan?.kind === 'forward' ? `${plan.endpoint.address}:${plan.endpoint.port}` : undefined,
      upstreamCluster: plan?.cluster, routeName: plan?.route, requestId, userAgent: req.headers['user-agent'],
      downstreamPeer: ctx.peerAddress, downstreamPrincipal: ctx.peerPrincipal, upstreamPrincipal: plan?.kind === 'forward' ? plan.identity : undefined,
      destination: ctx.destination, src, dst: plan?.kind === 'forward' ? mesh.workload(plan.endpoint.address) : undefined, service, grpc: false,
    });
  const local = (s: number, f: string, why: string, body = LOCAL_BODY[f] ?? '') => {
    status = s;
    flags = f;
    details = why;
    sent = localReply(socket, s, body);
    record();
  };

  if (String(req.headers.upgrade ?? '').trim().toLowerCase() !== 'websocket') return local(403, '-', `upgrade_failed: ${String(req.headers.upgrade ?? '')} is not websocket`);
  // A body on the handshake would reach the endpoint as bytes after its 101: refused, not smuggled.
  if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) return local(403, '-', 'upgrade_failed: a WebSocket handshake with a body');
  // The Listener's filters (RBAC...) hold for a handshake as for any request.
  const filters = filtersFor(deps.table(), ctx);
  if (filters.length) {
    const reply = await runHttpFilters(filters, {
      method: req.method ?? 'GET', url, path: q < 0 ? url : url.slice(0, q), host, scheme: 'http', protocol: `HTTP/${req.httpVersion}`, headers: req.headers,
      peerPrincipal: ctx.peerPrincipal, peerIp: ctx.peerIp, peerAddress: ctx.peerAddress, destination: ctx.destination, ...(service && { service }), grpc: false, metadata: new Map(),
    });
    if (reply) return local(reply.status, reply.flags, reply.details, reply.body);
  }
  if ('workload' in ctx.target) {
    plan = { kind: 'forward', route: '', cluster: '', endpoint: ctx.target.endpoint, identity: mesh.identity(ctx.target.endpoint.address) ?? '', timeoutMs: 0 };
  } else {
    plan = planRequest({
      table: deps.table(), mesh, balancer: deps.balancer, listener: ctx.target.listener, unsupported: deps.unsupported, source: ctx.peerAddress,
      req: { method: req.method ?? 'GET', path: q < 0 ? url : url.slice(0, q), query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), headers: req.headers, host, url },
    });
  }
  if (plan.kind === 'local') return local(plan.status, plan.flags, plan.reason);
  if (plan.kind === 'answer') return local(plan.status, '-', plan.details);
  // A long-lived upgrade is not a request in flight for least-request picking: the pick ends here.
  if (plan.clusterConfig) deps.balancer.onResult(plan.clusterConfig, plan.endpoint, 0);
  if (!plan.identity) return local(503, 'UH', `no identity known for ${plan.endpoint.address}`);

  let tunnel: Duplex;
  try {
    tunnel = await openTunnel(deps.upstream, plan.endpoint, plan.identity, {});
  } catch (e) {
    return local(503, 'UF', e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message);
  }
  if (socket.destroyed) {
    tunnel.destroy();
    status = 0;
    flags = 'DC';
    return record();
  }
  const headers = { ...endToEnd(req.headers), host, 'x-request-id': requestId, connection: 'Upgrade', upgrade: 'websocket' };
  const up = http.request({ createConnection: () => tunnel as Socket, method: req.method, path: url, headers, setHost: false });
  const gone = () => up.destroy();
  socket.once('close', gone);
  up.on('error', (e) => {
    socket.off('close', gone);
    if (status === 0 && !socket.destroyed) return local(503, 'UC', `upstream: ${e.message}`);
  });
  // Anything but 101: the endpoint's answer goes back as it is, then the tunnel closes.
  up.once('response', (res) => {
    socket.off('close', gone);
    status = res.statusCode ?? 502;
    const h = Object.entries(endToEnd(res.headers)).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x): [string, string] => [k, x]) : [[k, String(v)] as [string, string]]));
    socket.write(head(status, [...h.filter(([k]) => k !== 'content-length'), ['connection', 'close']]));
    res.on('data', (c: Buffer) => (sent += c.length));
    res.pipe(socket);
    socket.once('finish', () => setTimeout(() => socket.destroy(), 1000).unref());
    res.once('end', record);
    res.once('aborted', () => {
      flags = 'UR';
      socket.destroy();
      record();
    });
  });
  up.once('upgrade', (res, upSocket: Duplex, upEarly: Buffer) => {
    socket.off('close', gone);
    status = 101;
    socket.write(head(101, pairs(res.rawHeaders)));
    sent += upEarly.length;
    if (upEarly.length) socket.write(upEarly);
    if (early.length) upSocket.write(early);
    upSocket.on('error', () => {});
    socket.on('data', (c: Buffer) => (received += c.length));
    upSocket.on('data', (c: Buffer) => (sent += c.length));
    socket.pipe(upSocket);
    upSocket.pipe(socket);
    let closed = 0;
    // As tcp/relay.ts: a side reset (resetWatch) takes the other down now; a
    // side that ended cleanly lets the pipe finish the other.
    const downReset = resetWatch(socket);
    const upReset = resetWatch(upSocket);
    const onClose = (self: Duplex, other: Duplex, side: string) => () => {
      if ((self === upSocket ? upReset() : downReset()) && !other.destroyed) {
        if (flags === '-') flags = side === 'upstream' ? 'UR' : 'DC';
        other.destroy();
      }
      if (++closed === 2) record();
    };
    socket.once('close', onClose(socket, upSocket, 'downstream'));
    upSocket.once('close', onClose(upSocket, socket, 'upstream'));
  });
  up.end();
}
