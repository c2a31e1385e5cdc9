// One HTTP request that arrived through a tunnel, either HTTP version (Node's http and the http2
// compatibility API share the request/response surface): decide (router/plan.ts), act (answer
// locally, or open a tunnel to the endpoint and forward), and record once on every exit path.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Service, Workload } from '../../api/mesh.ts';
import { HboneError } from '../../hbone/errors.ts';
import { elapsedMs } from '../../telemetry/connection.ts';
import type { MeshIndex } from '../mesh.ts';
import type { RequestTelemetry } from '../metrics/record.ts';
import { planRequest, type Plan } from '../router/plan.ts';
import type { Endpoint, RoutingTable } from '../router/table.ts';
import type { Balancer } from '../upstream/balancer.ts';
import { endToEnd, forwardOver, openTunnel, type ForwardResult, type UpstreamOptions } from '../upstream/forward.ts';
import { forwardH2 } from '../upstream/forward-h2.ts';
import type { H2Sessions } from '../upstream/h2-sessions.ts';
import type { H1Tunnels } from '../upstream/h1-pool.ts';

/** What the tunnel a request came through was for: decided once, at CONNECT. */
export interface TunnelContext {
  peerPrincipal: string;
  peerAddress: string;
  /** The CONNECT authority, `ip:port`. */
  destination: string;
  /** The service port addressed, or the workload addressed directly (then no routes apply). */
  target: { service: Service; listener: string } | { workload: Workload; endpoint: Endpoint };
}

export interface RequestDeps {
  table: () => RoutingTable;
  mesh: () => MeshIndex;
  balancer: Balancer;
  unsupported: (cluster: string) => string | undefined;
  upstream: UpstreamOptions;
  telemetry: RequestTelemetry;
  /** Pooled HTTP/2 sessions, for clusters whose upstream speaks HTTP/2 (absent: every cluster is HTTP/1.1). */
  h2?: H2Sessions;
  /** Idle HTTP/1.1 tunnels kept for reuse (absent: a tunnel per request). */
  h1?: H1Tunnels;
}

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

const LOCAL_BODY: Record<string, string> = {
  NR: 'route not found',
  NC: 'cluster not found',
  UH: 'no healthy upstream',
  UF: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
  UC: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
  UT: 'upstream request timeout',
};

function localReply(res: Res, status: number, flags: string): number {
  const body = LOCAL_BODY[flags] ?? 'error';
  if (res.headersSent || res.destroyed) return 0;
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return Buffer.byteLength(body);
}

export async function handleRequest(deps: RequestDeps, ctx: TunnelContext, req: Req, res: Res): Promise<void> {
  const start = process.hrtime.bigint();
  const startTime = new Date();
  req.on('error', () => {}); // a client that goes away mid-body: seen as the response closing (DC)
  res.on('error', () => {});
  const h2 = req.httpVersionMajor === 2;
  const host = String((h2 ? (req as Http2ServerRequest).authority : req.headers.host) ?? '');
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const mesh = deps.mesh();
  const src = mesh.workload(ctx.peerAddress.replace(/^\[?([^\]]*)\]?:\d+$/, '$1'));
  const grpc = String(req.headers['content-type'] ?? '').startsWith('application/grpc');
  const requestId = String(req.headers['x-request-id'] ?? '') || randomUUID();

  let plan: Plan;
  if ('workload' in ctx.target) {
    plan = { kind: 'forward', route: '', cluster: '', endpoint: ctx.target.endpoint, identity: mesh.identity(ctx.target.endpoint.address) ?? '', timeoutMs: 0 };
  } else {
    plan = planRequest({
      table: deps.table(), mesh, balancer: deps.balancer, listener: ctx.target.listener, unsupported: deps.unsupported,
      req: { method: req.method ?? 'GET', path, query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), headers: req.headers, host },
    });
  }

  let result: ForwardResult;
  let upstreamHost: string | undefined;
  if (plan.kind === 'local') {
    req.resume();
    result = { status: plan.status, flags: plan.flags, details: plan.reason, requestBytes: 0, responseBytes: localReply(res, plan.status, plan.flags) };
  } else {
    upstreamHost = `${plan.endpoint.address}:${plan.endpoint.port}`;
    const h2 = deps.table().clusters.get(plan.cluster)?.http2 ? deps.h2 : undefined;
    result = await forward(deps.upstream, plan, req, res, host, requestId, h2, deps.h1);
  }

  const service = 'service' in ctx.target ? ctx.target.service : undefined;
  deps.telemetry.record({
    startTime,
    method: req.method ?? '',
    path: url,
    protocol: h2 ? 'HTTP/2' : `HTTP/${req.httpVersion}`,
    authority: host,
    responseCode: result.status,
    responseFlags: result.flags,
    details: result.details,
    bytesReceived: result.requestBytes,
    bytesSent: result.responseBytes,
    durationMs: elapsedMs(start),
    upstreamHost,
    upstreamCluster: plan.cluster,
    routeName: plan.route,
    requestId,
    userAgent: req.headers['user-agent'],
    downstreamPeer: ctx.peerAddress,
    downstreamPrincipal: ctx.peerPrincipal,
    upstreamPrincipal: plan.kind === 'forward' ? plan.identity : undefined,
    destination: ctx.destination,
    src,
    dst: plan.kind === 'forward' ? mesh.workload(plan.endpoint.address) : undefined,
    service,
    grpc,
    grpcStatus: result.grpcStatus,
  });
}

/** One attempt: the request to the planned endpoint, over HTTP/2 when `h2` is given, else HTTP/1.1 in a tunnel of its own. */
async function forward(o: UpstreamOptions, plan: Extract<Plan, { kind: 'forward' }>, req: Req, res: Res, host: string, requestId: string, h2?: H2Sessions, h1?: H1Tunnels): Promise<ForwardResult> {
  if (!plan.identity) {
    req.resume();
    return { status: 503, flags: 'UH', details: `no identity known for ${plan.endpoint.address}`, requestBytes: 0, responseBytes: localReply(res, 503, 'UH') };
  }
  if (h2) return forwardToH2(h2, plan, req, res, host, requestId);
  const gone = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
  let tunnel;
  try {
    tunnel = h1 ? (await h1.acquire(plan.endpoint, plan.identity)).tunnel : await openTunnel(o, plan.endpoint, plan.identity, {});
  } catch (e) {
    req.resume();
    const details = e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message;
    if (res.destroyed) return { status: 0, flags: 'DC', details, requestBytes: 0, responseBytes: 0 };
    return { status: 503, flags: 'UF', details, requestBytes: 0, responseBytes: localReply(res, 503, 'UF') };
  }
  const headers: OutgoingHttpHeaders = { ...endToEnd(req.headers), host, 'x-request-id': requestId };
  const result = await forwardOver(
    tunnel,
    {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers,
      body: req as unknown as Readable,
      respond: (status, h) => {
        res.writeHead(status, h);
      },
      sink: res as unknown as NodeJS.WritableStream & { destroy(e?: Error): unknown; readonly writableFinished: boolean },
      gone,
      headersSent: () => res.headersSent,
    },
    plan.timeoutMs,
    h1 && ((hint) => h1.release(tunnel, plan.endpoint, plan.identity, hint)),
  );
  if (result.status >= 500 && result.flags !== '-' && !res.headersSent) result.responseBytes = localReply(res, result.status, result.flags);
  return result;
}

async function forwardToH2(pool: H2Sessions, plan: Extract<Plan, { kind: 'forward' }>, req: Req, res: Res, host: string, requestId: string): Promise<ForwardResult> {
  const gone = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
  let session;
  try {
    session = await pool.get(plan.endpoint, plan.identity);
  } catch (e) {
    req.resume();
    const details = e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message;
    if (res.destroyed) return { status: 0, flags: 'DC', details, requestBytes: 0, responseBytes: 0 };
    return { status: 503, flags: 'UF', details, requestBytes: 0, responseBytes: localReply(res, 503, 'UF') };
  }
  const result = await forwardH2(
    session,
    {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      authority: host,
      te: String(req.headers.te ?? ''),
      splitTrailersOnly: req.httpVersionMajor === 2,
      headers: { ...endToEnd(req.headers), 'x-request-id': requestId },
      body: req as unknown as Readable,
      requestTrailers: () => (req.trailers && Object.keys(req.trailers).length ? req.trailers : undefined),
      respond: (status, h) => {
        res.writeHead(status, h);
      },
      // HTTP/1.1 clients get them after the last chunk (a response without content-length is chunked).
      respondTrailers: (t) => res.addTrailers(t as Record<string, string>),
      sink: res as unknown as NodeJS.WritableStream & { destroy(e?: Error): unknown; readonly writableFinished: boolean },
      gone,
      headersSent: () => res.headersSent,
    },
    plan.timeoutMs,
  );
  if (result.status >= 500 && result.flags !== '-' && !res.headersSent) result.responseBytes = localReply(res, result.status, result.flags);
  return result;
}
