// One HTTP request that arrived through a tunnel, either HTTP version (Node's http and the http2
// compatibility API share the request/response surface): decide (router/plan.ts), run the route's
// fault filter (filters/fault.ts), act (answer locally, or open a tunnel to the endpoint and
// forward, with retries by upstream/retry.ts when the route has a policy), and record once on every
// exit path.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Service, Workload } from '../../api/mesh.ts';
import { HboneError } from '../../hbone/errors.ts';
import { elapsedMs } from '../../telemetry/connection.ts';
import type { MeshIndex } from '../mesh.ts';
import type { RequestRecord, RequestTelemetry } from '../metrics/record.ts';
import { WaypointTracing } from '../tracing/tracer.ts';
import { RATE_LIMITED_BODY, type RateLimiter } from '../filters/rate-limit.ts';
import { prepareUpstream } from '../router/actions.ts';
import { planRequest, type Plan } from '../router/plan.ts';
import type { Cluster, Endpoint, RoutingTable } from '../router/table.ts';
import type { Balancer } from '../upstream/balancer.ts';
import { grpcStatusOf, injectFault } from '../filters/fault.ts';
import { grpcMessage, sendTrailersOnly } from '../grpc-local-reply.ts';
import { joinFlags, LOCAL_BODY, REFUSED_STREAM_BODY } from '../response-flags.ts';
import { endToEnd, forwardOver, openTunnel, type Exchange, type ForwardResult, type UpstreamOptions } from '../upstream/forward.ts';
import { forwardWithRetries, nextEndpoint, RETRY_BUFFER_BYTES, type ReplayMeter, type RetryRun } from '../upstream/retry.ts';
import { startMirrors } from '../upstream/mirror.ts';
import { forwardH2, h2Transport, type H2Exchange } from '../upstream/forward-h2.ts';
import type { H2Sessions } from '../upstream/h2-sessions.ts';
import type { H1Tunnels } from '../upstream/h1-pool.ts';
import { normalizeUrl } from './normalize-path.ts';
import { runHttpFilters, type FilterReply, type FilterRequest, type HttpFilter } from '../filters/chain.ts';

/** What the tunnel a request came through was for: decided once, at CONNECT. */
export interface TunnelContext {
  peerPrincipal: string;
  peerAddress: string;
  /** The bare IP of peerAddress, where the mesh's workloads are looked up. */
  peerIp: string;
  /** The CONNECT authority, `ip:port`. */
  destination: string;
  /** On a port of undeclared protocol: the cluster that takes the tunnel if it is not HTTP. */
  tcpFallback?: string;
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
  /** Local rate limit buckets (filters/rate-limit.ts); without it routes' limits are not enforced. */
  rateLimiter?: RateLimiter;
  /** Fault percentages and retry backoff draw from it (tests fix it). */
  random?: () => number;
  /** The most of a request body kept for retries (default RETRY_BUFFER_BYTES), and what is kept now. */
  retryBufferBytes?: number;
  replayMeter?: ReplayMeter;
  /** Pooled HTTP/2 sessions, for clusters whose upstream speaks HTTP/2 (absent: every cluster is HTTP/1.1). */
  h2?: H2Sessions;
  /** Idle HTTP/1.1 tunnels kept for reuse (absent: a tunnel per request). */
  h1?: H1Tunnels;
  /** Spans for requests on listeners with tracing (Telemetry); absent: never traced. */
  tracing?: WaypointTracing;
}

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;


function localReply(res: Res, status: number, flags: string, extra?: Record<string, string>, body = flags.split(',').map((f) => LOCAL_BODY[f]).find(Boolean) ?? 'error'): number {
  if (res.headersSent || res.destroyed) return 0;
  res.writeHead(status, { ...extra, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return Buffer.byteLength(body);
}

/** The local reply for a forward that failed before any response reached the client. */
const failureReply = (res: Res, r: ForwardResult): number => localReply(res, r.status, r.flags, undefined, r.reset === 'refused' ? REFUSED_STREAM_BODY : undefined);

function answer(res: Res, status: number, body: string): number {
  if (res.headersSent || res.destroyed) return 0;
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
  return Buffer.byteLength(body);
}

/** The filters for the tunnel's target: its port's (merged with the waypoint's own), or the waypoint's own for a workload. */
export function filtersFor(table: RoutingTable, ctx: TunnelContext): readonly HttpFilter[] {
  const f = 'service' in ctx.target ? table.filters?.get(ctx.target.listener) : table.ownFilters;
  return f?.http ?? [];
}

/** Whether a filter (RBAC's LOG action) marked the request for the access log: Envoy's envoy.common access_log_hint. */
const hinted = (m: FilterRequest['metadata'] | undefined): boolean => m?.get('envoy.common')?.access_log_hint === true;

/**
 * A filter's local answer. A gRPC request gets it as Envoy's local replies do: HTTP 200,
 * trailers-only, the HTTP status mapped to a gRPC status (403: PERMISSION_DENIED, 401:
 * UNAUTHENTICATED) and the body as grpc-message.
 */
function answerFiltered(res: Res, r: FilterReply, grpc: boolean): { bytes: number; status: number; grpcStatus?: number } {
  if (res.headersSent || res.destroyed) return { bytes: 0, status: r.status };
  if (grpc) {
    const grpcStatus = grpcStatusOf(r.status);
    sendTrailersOnly(res, { ...r.headers, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': grpcMessage(r.body) });
    return { bytes: 0, status: 200, grpcStatus };
  }
  res.writeHead(r.status, { 'content-type': 'text/plain', ...r.headers, 'content-length': Buffer.byteLength(r.body) });
  res.end(r.body);
  return { bytes: Buffer.byteLength(r.body), status: r.status };
}

/**
 * Reads up to `max` bytes of the body and puts them back (unshift, before 'end' can be emitted), so
 * that whoever reads the request next gets all of it. Resolves early when the client goes away.
 */
function peekBody(req: Req, max: number): Promise<{ bytes: Buffer; complete: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    // Whether the body has all arrived ('end' is not emitted yet: the bytes are still to be put back).
    // HTTP/2's compatibility request is complete only after 'end'; its stream has ended before.
    const ended = () => ('stream' in req ? req.stream.readableEnded : req.complete);
    const done = (complete: boolean) => {
      req.off('readable', onReadable);
      req.off('close', onClose);
      const bytes = Buffer.concat(chunks);
      if (bytes.length && !req.readableEnded) req.unshift(bytes);
      resolve({ bytes: bytes.subarray(0, max), complete });
    };
    const onReadable = () => {
      let c: Buffer | null;
      while (size < max && (c = req.read() as Buffer | null) !== null) {
        chunks.push(c);
        size += c.length;
      }
      if (size >= max) done(size === max && ended() && req.readableLength === 0);
      else if (ended()) done(true);
    };
    const onClose = () => done(false);
    req.on('readable', onReadable);
    req.once('close', onClose);
  });
}

export async function handleRequest(deps: RequestDeps, ctx: TunnelContext, req: Req, res: Res): Promise<void> {
  const start = process.hrtime.bigint();
  const startTime = new Date();
  req.on('error', () => {}); // a client that goes away mid-body: seen as the response closing (DC)
  res.on('error', () => {});
  const h2 = req.httpVersionMajor === 2;
  const host = String((h2 ? (req as Http2ServerRequest).authority : req.headers.host) ?? '');
  // Normalized before filters and routing, and sent upstream so (Envoy's normalize_path, merge_slashes).
  const url = normalizeUrl(req.url ?? '/');
  if (url !== req.url) req.url = url;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const mesh = deps.mesh();
  const src = mesh.workload(ctx.peerIp);
  const grpc = String(req.headers['content-type'] ?? '').startsWith('application/grpc');
  const requestId = String(req.headers['x-request-id'] ?? '') || randomUUID();
  // Telemetry of the listener: its span (propagated into the headers the upstream gets) and whether it is logged.
  const tel = WaypointTracing.of(deps.table(), 'service' in ctx.target ? ctx.target.listener : undefined);
  if (tel?.tracing && deps.tracing && !deps.tracing.loaded) await deps.tracing.load(); // the first traced request only
  const span = tel?.tracing && deps.tracing?.start(tel.tracing, {
    headers: req.headers, target: 'service' in ctx.target ? ctx.target.listener : ctx.destination, method: req.method ?? 'GET', scheme: h2 ? (req as Http2ServerRequest).scheme || 'http' : 'http',
    host, url, protocol: h2 ? 'HTTP/2' : `HTTP/${req.httpVersion}`, peerIp: ctx.peerIp, requestId, startTime,
  });
  const logged = tel?.accessLog !== false;
  const record = (r: RequestRecord) => {
    deps.telemetry.record(r, logged);
    span?.end(r);
  };

  // The Listener's filters (authentication, authorization...) before routing; their answer ends the request.
  const filters = filtersFor(deps.table(), ctx);
  let metadata: FilterRequest['metadata'] | undefined;
  let filterHeaders: Record<string, string> | undefined;
  if (filters.length) {
    // A client gone while a filter waits (an authorizer's call) cancels the wait.
    const abort = new AbortController();
    const gone = () => abort.abort();
    res.once('close', gone);
    const fr: FilterRequest = {
      method: req.method ?? 'GET', url, path, host, scheme: h2 ? (req as Http2ServerRequest).scheme || 'http' : 'http', protocol: h2 ? 'HTTP/2' : `HTTP/${req.httpVersion}`,
      headers: req.headers, peerPrincipal: ctx.peerPrincipal, peerIp: ctx.peerIp, peerAddress: ctx.peerAddress, destination: ctx.destination,
      ...('service' in ctx.target && { service: ctx.target.service }), grpc, metadata: new Map(), signal: abort.signal, body: (max) => peekBody(req, max),
    };
    metadata = fr.metadata;
    const reply = await runHttpFilters(filters, fr).finally(() => res.off('close', gone));
    filterHeaders = fr.responseHeaders;
    if (reply) {
      req.resume();
      const sent = answerFiltered(res, reply, grpc);
      record({
        startTime, method: req.method ?? '', path: url, protocol: fr.protocol, authority: host, responseCode: sent.status, responseFlags: reply.flags, details: reply.details,
        bytesReceived: 0, bytesSent: sent.bytes, durationMs: elapsedMs(start), routeName: '', requestId, userAgent: req.headers['user-agent'],
        downstreamPeer: ctx.peerAddress, downstreamPrincipal: ctx.peerPrincipal, destination: ctx.destination, src, service: 'service' in ctx.target ? ctx.target.service : undefined, grpc, grpcStatus: sent.grpcStatus,
        ...(hinted(metadata) && { accessLogHint: true }),
        ...(reply.policy && { policy: reply.policy }),
      });
      return;
    }
  }

  let plan: Plan;
  let parsedQuery: URLSearchParams | undefined;
  if ('workload' in ctx.target) {
    plan = { kind: 'forward', route: '', cluster: '', endpoint: ctx.target.endpoint, identity: mesh.identity(ctx.target.endpoint.address) ?? '', timeoutMs: 0 };
  } else {
    plan = planRequest({
      table: deps.table(), mesh, balancer: deps.balancer, listener: ctx.target.listener, unsupported: deps.unsupported, source: ctx.peerAddress,
      req: {
        method: req.method ?? 'GET', path, headers: req.headers, host, url, scheme: h2 ? (req as Http2ServerRequest).scheme : undefined,
        // Parsed only when a route matches on the query or hashes by it: most requests never need it.
        get query() {
          return (parsedQuery ??= new URLSearchParams(q < 0 ? '' : url.slice(q + 1)));
        },
      },
    });
  }

  const limit = plan.rateLimit && deps.rateLimiter?.check(plan.rateLimit, {
    method: req.method ?? 'GET', url, host, headers: req.headers, remoteAddress: ctx.peerAddress, principal: ctx.peerPrincipal, cluster: plan.cluster ?? '',
  });

  // What filters add to the response (an authorizer's response_headers_to_add), with the rate limit's.
  const addHeaders = filterHeaders ? { ...filterHeaders, ...limit?.headers } : limit?.headers;
  let result: ForwardResult;
  let upstreamHost: string | undefined;
  // The route's local rate limit runs first, then its fault filter (a delay, then maybe a local
  // abort), then the router: Envoy's filter order.
  const injected = !limit?.limited && plan.fault ? await injectFault(plan.fault, deps.random ?? Math.random, grpc, req, res) : undefined;
  // Where the request went (retries move it): nowhere when a filter answered.
  const target = plan.kind === 'forward' && !limit?.limited && !injected?.ended ? { endpoint: plan.endpoint, identity: plan.identity } : undefined;
  // A picked endpoint the request never reaches ends its pick (least-request counts, nothing learnt).
  if (plan.kind === 'forward' && plan.clusterConfig && !target) deps.balancer.onResult(plan.clusterConfig, plan.endpoint, 0);
  if (injected?.ended) {
    result = { ...injected.ended, requestBytes: 0 };
  } else if (limit?.limited) {
    req.resume();
    const status = plan.rateLimit!.status;
    result = { status, flags: 'RL', details: RATE_LIMITED_BODY, requestBytes: 0, responseBytes: localReply(res, status, 'RL', limit.headers) };
  } else if (plan.kind === 'local') {
    req.resume();
    result = { status: plan.status, flags: plan.flags, details: plan.reason, requestBytes: 0, responseBytes: localReply(res, plan.status, plan.flags, limit?.headers) };
  } else if (plan.kind === 'answer') {
    req.resume();
    if (!res.headersSent && !res.destroyed) {
      res.writeHead(plan.status, { ...plan.headers, ...addHeaders, 'content-length': plan.body.length });
      res.end(plan.body);
    }
    result = { status: plan.status, flags: '-', details: plan.details, requestBytes: 0, responseBytes: plan.body.length };
  } else {
    result = plan.clusterConfig ? await admitted(deps, plan, plan.clusterConfig, target!, req, res, host, requestId, addHeaders) : await forward(deps, plan, target!, req, res, host, requestId, addHeaders);
    if (result.flags !== 'UO') upstreamHost = `${target!.endpoint.address}:${target!.endpoint.port}`;
  }
  if (injected?.flags) result.flags = joinFlags(injected.flags, result.flags);

  const service = 'service' in ctx.target ? ctx.target.service : undefined;
  record({
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
    upstreamPrincipal: upstreamHost ? target?.identity : undefined,
    destination: ctx.destination,
    src,
    dst: upstreamHost && target ? mesh.workload(target.endpoint.address) : undefined,
    service,
    grpc,
    grpcStatus: result.grpcStatus,
    ...(hinted(metadata) && { accessLogHint: true }),
  });
}

/** What an attempt tells outlier detection about its endpoint: the status, the one answered for a local failure, 0 for nothing. */
const outcome = (r: ForwardResult): number => {
  const flags = r.flags.split(',');
  if (flags.includes('DC') || flags.includes('UH') || flags.includes('UO')) return 0;
  if (flags.includes('UF') || flags.includes('UC')) return 503;
  if (flags.includes('UT')) return 504;
  return r.status;
};

type ForwardPlan = Extract<Plan, { kind: 'forward' }>;
type Target = { endpoint: Endpoint; identity: string };
/** The request as it goes upstream: rewritten URL, edited headers, and the response header edits. */
type Upstream = { url: string; headers: OutgoingHttpHeaders; response: (h: OutgoingHttpHeaders) => void };
type Sink = NodeJS.WritableStream & { destroy(e?: Error): unknown; readonly writableFinished: boolean };

/** A request to a cluster: through its circuit breakers (503 UO on overflow, the whole request with its retries holding one place), then forwarded. */
async function admitted(deps: RequestDeps, plan: ForwardPlan, cluster: Cluster, target: Target, req: Req, res: Res, host: string, requestId: string, addHeaders?: Record<string, string>): Promise<ForwardResult> {
  const admission = deps.balancer.admit(cluster);
  const leave = () => admission.release(); // a client gone while pending frees its place in the queue
  res.once('close', leave);
  try {
    if (!(await admission.ready)) {
      req.resume();
      deps.balancer.onResult(cluster, plan.endpoint, 0);
      if (res.destroyed) return { status: 0, flags: 'DC', details: 'downstream went away while pending', requestBytes: 0, responseBytes: 0 };
      return { status: 503, flags: 'UO', details: `cluster ${cluster.name}: circuit breaker overflow`, requestBytes: 0, responseBytes: localReply(res, 503, 'UO') };
    }
    if (res.destroyed) {
      deps.balancer.onResult(cluster, plan.endpoint, 0);
      return { status: 0, flags: 'DC', details: 'downstream went away while pending', requestBytes: 0, responseBytes: 0 };
    }
    return await forward(deps, plan, target, req, res, host, requestId, addHeaders);
  } finally {
    res.off('close', leave);
    admission.release();
  }
}

/** The response headers the client gets: the upstream's, a generated consistent-hash cookie, the rate limit's. */
function responseHeaders(plan: ForwardPlan, h: OutgoingHttpHeaders, addHeaders?: Record<string, string>): OutgoingHttpHeaders {
  if (plan.setCookie) h['set-cookie'] = [...[h['set-cookie'] ?? []].flat().map(String), plan.setCookie];
  return addHeaders ? { ...h, ...addHeaders } : h;
}

const tunnelFailure = (e: unknown, res: Res): ForwardResult => {
  const details = e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message;
  if (res.destroyed) return { status: 0, flags: 'DC', details, requestBytes: 0, responseBytes: 0 };
  return { status: 503, flags: 'UF', details, requestBytes: 0, responseBytes: localReply(res, 503, 'UF') };
};

/**
 * Forwards: over HTTP/2 to an http2/grpc cluster, else HTTP/1.1 in a tunnel (pooled when kept
 * alive), once or with retries when the route has a policy. Every attempt's outcome goes to the
 * balancer (outlier detection, requests in flight) for the endpoint it went to.
 */
async function forward(deps: RequestDeps, plan: ForwardPlan, target: Target, req: Req, res: Res, host: string, requestId: string, addHeaders?: Record<string, string>): Promise<ForwardResult> {
  const o = deps.upstream;
  const report = (endpoint: Endpoint, r: ForwardResult) => plan.clusterConfig && deps.balancer.onResult(plan.clusterConfig, endpoint, outcome(r));
  if (!plan.identity) {
    req.resume();
    const r: ForwardResult = { status: 503, flags: 'UH', details: `no identity known for ${plan.endpoint.address}`, requestBytes: 0, responseBytes: localReply(res, 503, 'UH') };
    report(plan.endpoint, r);
    return r;
  }
  const headers: OutgoingHttpHeaders = { ...endToEnd(req.headers), host, 'x-request-id': requestId };
  const prepared = prepareUpstream(plan.entry, plan.cluster, req.url ?? '/', headers);
  if (!prepared) {
    req.resume();
    report(plan.endpoint, { status: 0, flags: 'DC', requestBytes: 0, responseBytes: 0 });
    return { status: 414, flags: '-', details: 'rewrite_path_too_long', requestBytes: 0, responseBytes: answer(res, 414, 'URI Too Long') };
  }
  const up: Upstream = { url: prepared.url, headers, response: (h) => prepared.response(h) };
  // Envoy mirrors whatever becomes of the request itself: started before it is sent.
  if (plan.mirrors) startMirrors(o, plan.mirrors, { method: req.method ?? 'GET', url: up.url, headers, body: req as unknown as Readable });
  if (plan.clusterConfig?.http2 && deps.h2) return forwardToH2(deps, deps.h2, plan, target, req, res, up, requestId, report, addHeaders);
  const gone = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
  const exchange = {
    method: req.method ?? 'GET',
    url: up.url,
    headers,
    body: req as unknown as Readable,
    respond: (status: number, h: OutgoingHttpHeaders) => {
      up.response(h);
      res.writeHead(status, responseHeaders(plan, h, addHeaders));
    },
    sink: res as unknown as Sink,
    gone,
    headersSent: () => res.headersSent,
  };
  if (plan.retry) {
    const result = await forwardWithRetries(retryRun(deps, plan, target, exchange, report));
    if (result.status >= 500 && result.flags !== '-' && !res.headersSent) result.responseBytes = failureReply(res, result);
    return result;
  }
  const h1 = deps.h1;
  let tunnel: Duplex;
  try {
    tunnel = h1 ? (await h1.acquire(plan.endpoint, plan.identity)).tunnel : await openTunnel(o, plan.endpoint, plan.identity, {});
  } catch (e) {
    req.resume();
    const r = tunnelFailure(e, res);
    report(plan.endpoint, r);
    return r;
  }
  const result = await forwardOver(tunnel, exchange, plan.timeoutMs, h1 && ((hint) => h1.release(tunnel, plan.endpoint, plan.identity, hint)));
  report(plan.endpoint, result);
  if (result.status >= 500 && result.flags !== '-' && !res.headersSent) result.responseBytes = failureReply(res, result);
  return result;
}

/** The retry loop's view of this request (upstream/retry.ts); `target` follows the attempts. */
function retryRun<X extends Exchange>(deps: RequestDeps, plan: ForwardPlan, target: Target, exchange: RetryRun<X>['exchange'], report: (endpoint: Endpoint, r: ForwardResult) => void): RetryRun<X> {
  const mesh = deps.mesh();
  const endpoints = plan.endpoints ?? [plan.endpoint];
  const c = plan.clusterConfig;
  const h1 = deps.h1;
  return {
    policy: plan.retry!,
    timeoutMs: plan.timeoutMs,
    random: deps.random ?? Math.random,
    upstream: deps.upstream,
    bufferLimit: deps.retryBufferBytes ?? RETRY_BUFFER_BYTES,
    meter: deps.replayMeter,
    first: { ...target },
    // A retry picks by the cluster's policy (ejections, least request), away from the hosts tried when the policy says so.
    pick: (tried) => {
      const endpoint = c ? deps.balancer.pick(c, endpoints, undefined, plan.retry!.previousHosts ? tried : undefined) : nextEndpoint(plan.retry!, deps.balancer, plan.cluster, endpoints, tried);
      const identity = endpoint && mesh.identity(endpoint.address);
      if (endpoint && !identity && c) deps.balancer.onResult(c, endpoint, 0);
      return endpoint && identity ? { endpoint, identity } : undefined;
    },
    onAttempt: (endpoint) => {
      target.endpoint = endpoint;
      target.identity = mesh.identity(endpoint.address) ?? target.identity;
    },
    onAttemptResult: report,
    ...(h1 && {
      open: async (t: Target) => (await h1.acquire(t.endpoint, t.identity)).tunnel,
      keep: (tunnel: Duplex, t: Target) => (hint: number | undefined) => h1.release(tunnel, t.endpoint, t.identity, hint),
    }),
    exchange,
  };
}

/** A request to an HTTP/2 upstream (http2 and grpc ports): a stream on the endpoint's pooled session, trailers both ways, retried as HTTP/1.1 is. */
async function forwardToH2(deps: RequestDeps, pool: H2Sessions, plan: ForwardPlan, target: Target, req: Req, res: Res, up: Upstream, requestId: string, report: (endpoint: Endpoint, r: ForwardResult) => void, addHeaders?: Record<string, string>): Promise<ForwardResult> {
  const gone = new Promise<void>((resolve) => res.once('close', () => (res.writableFinished ? undefined : resolve())));
  const { host, ...headers } = up.headers;
  const exchange: Omit<H2Exchange, 'accept'> = {
    method: req.method ?? 'GET',
    url: up.url,
    authority: String(host ?? ''),
    te: String(req.headers.te ?? ''),
    splitTrailersOnly: req.httpVersionMajor === 2,
    headers: { ...headers, 'x-request-id': requestId },
    body: req as unknown as Readable,
    requestTrailers: () => (req.trailers && Object.keys(req.trailers).length ? req.trailers : undefined),
    respond: (status, h) => {
      up.response(h);
      res.writeHead(status, responseHeaders(plan, h, addHeaders));
    },
    // HTTP/1.1 clients get them after the last chunk (a response without content-length is chunked).
    respondTrailers: (t) => res.addTrailers(t as Record<string, string>),
    sink: res as unknown as Sink,
    gone,
    headersSent: () => res.headersSent,
  };
  let result: ForwardResult;
  if (plan.retry) result = await forwardWithRetries({ ...retryRun(deps, plan, target, exchange, report), transport: h2Transport(pool) });
  else {
    let session;
    try {
      session = await pool.get(plan.endpoint, plan.identity);
    } catch (e) {
      req.resume();
      const r = tunnelFailure(e, res);
      report(plan.endpoint, r);
      return r;
    }
    result = await forwardH2(session, exchange, plan.timeoutMs);
    report(plan.endpoint, result);
  }
  if (result.status >= 500 && result.flags !== '-' && !res.headersSent) result.responseBytes = failureReply(res, result);
  return result;
}
