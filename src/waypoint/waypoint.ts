// The waypoint as a library: an HBONE server (src/hbone) whose CONNECT streams are taken as HTTP
// (inbound/tunnels.ts), each request routed by the table the control plane configures over xDS
// (xds/config.ts) and forwarded to an endpoint over HBONE under the waypoint's own identity
// (upstream/forward.ts; HTTP/2 clusters on pooled sessions, upstream/h2-sessions.ts), with Istio's
// request metrics and an access-log line per request. WebSocket upgrades are relayed
// (inbound/upgrade.ts); a TCP port's tunnels are relayed as bytes (tcp/relay.ts, Istio's TCP
// metrics). The process around it (`weft waypoint`: identity from the CA, the workload API for
// MeshIndex, admin port) is the caller's.
import type { Registry } from 'prom-client';
import { formatAuthority } from '../hbone/authority.ts';
import { createHboneServer, type HboneServer } from '../hbone/node/server.ts';
import { HbonePool } from '../hbone/pool.ts';
import type { ConnectDecision, HboneOutcome } from '../hbone/server/contract.ts';
import type { Credentials } from '../hbone/settings.ts';
import { formatSpiffe } from '../api/spiffe.ts';
import type { AccessLogSink } from '../telemetry/access-log.ts';
import { IstioHttpMetrics } from '../telemetry/istio-http.ts';
import { RateLimiter, type RateLimiterOptions } from './filters/rate-limit.ts';
import { IstioTcpMetrics } from '../telemetry/istio-tcp.ts';
import { handleRequest, type TunnelContext } from './inbound/request.ts';
import { handleUpgrade } from './inbound/upgrade.ts';
import { DEFAULT_HTTP_LIMITS, HttpTunnels, type HttpLimits } from './inbound/tunnels.ts';
import { MeshIndex } from './mesh.ts';
import { RequestTelemetry } from './metrics/record.ts';
import { WaypointTracing, type TracingOptions } from './tracing/tracer.ts';
import { Balancer } from './upstream/balancer.ts';
import type { UpstreamOptions } from './upstream/forward.ts';
import type { ReplayMeter } from './upstream/retry.ts';
import { H2Sessions, DEFAULT_H2_LIMITS, type H2Limits } from './upstream/h2-sessions.ts';
import { H1Tunnels, DEFAULT_H1_LIMITS, type H1Limits } from './upstream/h1-pool.ts';
import { TcpRelays, type TcpRecord } from './tcp/relay.ts';
import { WaypointConfig } from './xds/config.ts';
import { ServiceChannels } from './filters/ext-authz/channels.ts';
import { ipOf } from '../util/peer-ip.ts';

export interface WaypointOptions {
  /** The waypoint's own workload credentials: served to clients, presented to endpoints. */
  credentials: () => Credentials;
  /** Its SPIFFE id (the certificate's). */
  identity: string;
  trustDomain: string;
  /** Routes, clusters, endpoints: fed by connect() on `config`, or by hand in tests. */
  config: WaypointConfig;
  /** Services and workloads (the workload API); replaced with setMesh(). */
  mesh?: MeshIndex;
  registry: Registry;
  accessLog?: AccessLogSink;
  limits?: Partial<HttpLimits>;
  /** How to reach an endpoint's HBONE listener (default: TCP to its address, port 15008). */
  dial?: UpstreamOptions['dial'];
  hbonePort?: number;
  pool?: HbonePool;
  /** Every CONNECT outcome (the tunnel level), for logs and tests. */
  onTunnel?: (o: HboneOutcome) => void;
  /** Weighted clusters, fault percentages and retry backoff draw from it. */
  random?: () => number;
  /** Bounds of the local rate limit buckets. */
  rateLimit?: RateLimiterOptions;
  /** The most of a request body kept for replays by retries (Envoy's per_connection_buffer_limit, 1 MiB). */
  retryBufferBytes?: number;
  /** Pooled HTTP/2 sessions to endpoints: how many, how long idle. */
  h2Limits?: Partial<H2Limits>;
  /** Every TCP-port connection once it ends. */
  onTcp?: (r: TcpRecord) => void;
  /** Keep HTTP/1.1 tunnels to endpoints for reuse (h1-pool.ts), with these bounds; unset: a tunnel per request. */
  h1KeepAlive?: Partial<H1Limits>;
  /** Tracing: the node's facts for Istio's span tags (default: from the identity), sampling's random source, export bounds. */
  tracing?: Partial<TracingOptions>;
}

/** Tunnels (HBONE streams) and HTTP state held at a moment: all 0 when idle. */
export interface WaypointStats {
  sessions: number;
  streams: number;
  tunnels: number;
  h2Sessions: number;
  requests: number;
  tcp: number;
  upstreamH2: number;
  upstreamH1Idle: number;
}

/** How a drain went, for its log line. */
export interface DrainReport {
  durationMs: number;
  /** What was open when it began. */
  atStart: WaypointStats;
  /** What was still open when the deadline closed it; absent when everything ended on its own. */
  cut?: WaypointStats;
}

/** setTimeout's largest delay (about 24.8 days): a longer one fires at once. Stands for "no deadline". */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** After the deadline closed every tunnel, how long the HBONE connections get to close before the drain stops waiting. */
const CUT_GRACE_MS = 2000;

export class Waypoint {
  readonly hbone: HboneServer;
  readonly pool: HbonePool;
  readonly metrics: IstioHttpMetrics;
  /** Every route's local rate limit buckets, kept across routing table swaps. */
  readonly rateLimiter: RateLimiter;
  /** Endpoint picking, circuit breakers and outlier detection: the per-cluster state. */
  readonly balancer: Balancer;
  /** Request body bytes kept for retries: now (0 when idle) and the most at once. */
  readonly replay: ReplayMeter = { held: 0, peak: 0 };
  readonly tcpMetrics: IstioTcpMetrics;
  /** HTTP/2 sessions to endpoints (http2 and grpc clusters). */
  readonly h2: H2Sessions;
  /** Idle HTTP/1.1 tunnels to endpoints, when kept (h1KeepAlive). */
  readonly h1?: H1Tunnels;
  /** How filters reach the services they call (the external authorizer), given to them through the config's FilterEnv. */
  readonly services: ServiceChannels;
  private readonly tcp: TcpRelays;
  private readonly tunnels: HttpTunnels;
  private mesh: MeshIndex;
  private requests = 0;
  /** Spans of traced listeners and their export (idle until a listener has tracing). */
  readonly tracing: WaypointTracing;
  private drainRun?: { done: Promise<DrainReport>; deadline: (ms: number) => void };

  constructor(private readonly o: WaypointOptions) {
    this.mesh = o.mesh ?? new MeshIndex();
    this.pool = o.pool ?? new HbonePool();
    this.metrics = new IstioHttpMetrics(o.registry);
    this.tcpMetrics = new IstioTcpMetrics(o.registry);
    const telemetry = new RequestTelemetry(this.metrics, o.accessLog);
    this.rateLimiter = new RateLimiter(o.rateLimit);
    this.balancer = new Balancer(o.random);
    const upstream: UpstreamOptions = { pool: this.pool, credentials: o.credentials, identity: o.identity, dial: o.dial, hbonePort: o.hbonePort };
    this.h2 = new H2Sessions(upstream, { ...DEFAULT_H2_LIMITS, ...o.h2Limits });
    if (o.h1KeepAlive) this.h1 = new H1Tunnels(upstream, { ...DEFAULT_H1_LIMITS, ...o.h1KeepAlive });
    this.services = o.config.env.services = new ServiceChannels({ table: () => o.config.table, mesh: () => this.mesh, upstream, h2: this.h2 });
    this.tracing = new WaypointTracing(() => o.config.table, tracingOptions(o));
    const deps = {
      tracing: this.tracing,
      table: () => o.config.table,
      mesh: () => this.mesh,
      balancer: this.balancer,
      unsupported: (c: string) => o.config.unsupported(c),
      upstream,
      telemetry,
      rateLimiter: this.rateLimiter,
      random: o.random,
      retryBufferBytes: o.retryBufferBytes,
      replayMeter: this.replay,
      h2: this.h2,
      h1: this.h1,
    };
    this.tcp = new TcpRelays({ ...deps, metrics: this.tcpMetrics, onClose: o.onTcp });
    this.tunnels = new HttpTunnels(
      { ...DEFAULT_HTTP_LIMITS, ...o.limits },
      (ctx, req, res) => {
        this.requests++;
        handleRequest(deps, ctx, req, res)
          .catch((e: Error) => {
            if (!res.headersSent && !res.destroyed) res.writeHead(500).end();
            o.accessLog?.warn({ err: e.message, destination: ctx.destination }, 'request failed');
          })
          .finally(() => this.requests--);
      },
      ({ ctx, status, reason }) =>
        telemetry.record({
          startTime: new Date(), method: '', path: '', protocol: 'HTTP/1.1', responseCode: status, responseFlags: 'DPE', details: reason,
          bytesReceived: 0, bytesSent: 0, durationMs: 0, downstreamPeer: ctx.peerAddress, downstreamPrincipal: ctx.peerPrincipal,
          destination: ctx.destination, src: this.mesh.workload(ctx.peerIp),
          service: 'service' in ctx.target ? ctx.target.service : undefined, grpc: false,
        }),
    );
    this.tunnels.onUpgrade = (ctx, req, socket, head) => {
      this.requests++;
      handleUpgrade(deps, ctx, req, socket, head)
        .catch((e: Error) => {
          socket.destroy();
          o.accessLog?.warn({ err: e.message, destination: ctx.destination }, 'upgrade failed');
        })
        .finally(() => this.requests--);
    };
    // Not HTTP on a port of undeclared protocol: relayed as TCP to the port's cluster, as a TCP
    // port's tunnel is (L4 policy, an endpoint, TCP metrics). The client already has its 200, so a
    // refusal here is a reset of the tunnel.
    this.tunnels.onTcp = (ctx, d) => {
      if (!('service' in ctx.target) || ctx.tcpFallback === undefined) return void d.destroy();
      const port = Number(ctx.destination.slice(ctx.destination.lastIndexOf(':') + 1));
      void this.tcp.connect({ peerPrincipal: ctx.peerPrincipal, peerAddress: ctx.peerAddress, service: ctx.target.service, port, cluster: ctx.tcpFallback, listener: ctx.target.listener, destination: ctx.destination }).then(
        (decision) => (decision.status === 200 && 'acceptStream' in decision ? decision.acceptStream(d) : d.destroy()),
        () => d.destroy(),
      );
    };
    this.hbone = createHboneServer({
      credentials: o.credentials,
      trustDomain: o.trustDomain,
      onConnect: async (req) => this.decide(formatSpiffe(req.peer), req.peerAddress, req.authority),
      onComplete: o.onTunnel,
    });
  }

  setMesh(mesh: MeshIndex): void {
    this.mesh = mesh;
  }

  listen(options: { port: number; host?: string } | { fd: number }): Promise<void> {
    return this.hbone.listen(options);
  }

  /** Tunnels (HBONE streams) and HTTP state held now: all 0 when idle, for leak checks. */
  stats(): WaypointStats {
    return { ...this.hbone.stats(), ...this.tunnels.stats(), requests: this.requests, tcp: this.tcp.size, upstreamH2: this.h2.size, upstreamH1Idle: this.h1?.size ?? 0 };
  }

  /** Whether drain() has begun (readiness says not ready from then on). */
  get draining(): boolean {
    return this.drainRun !== undefined;
  }

  /**
   * Stops accepting HBONE connections (GOAWAY on the open ones), ends HTTP gracefully (HTTP/1.1:
   * `Connection: close` on each tunnel's next response; HTTP/2: GOAWAY, open streams finish; see
   * inbound/tunnels.ts), lets upgraded and TCP tunnels relay until they end, and closes whatever is
   * left `deadlineMs` from now (Infinity: no deadline, 0: now). Resolves once everything has ended.
   * Called again while draining, it can only bring the deadline nearer (a second SIGINT, a test's
   * cleanup) and resolves with the first call.
   */
  drain(deadlineMs = 5000): Promise<DrainReport> {
    if (this.drainRun) {
      this.drainRun.deadline(deadlineMs);
      return this.drainRun.done;
    }
    const start = Date.now();
    const atStart = this.stats();
    let cut: WaypointStats | undefined;
    let timer: NodeJS.Timeout | undefined;
    let dueAt = Infinity;
    let cutSettled!: () => void;
    const afterCut = new Promise<void>((resolve) => (cutSettled = resolve));
    const cutNow = () => {
      if (cut) return;
      cut = this.stats();
      this.tunnels.destroyAll();
      this.tcp.destroyAll();
      // The HBONE sessions close once their streams are gone (and the HBONE server's own deadline,
      // the same, destroys its connections); a connection that lingers is not waited for long.
      setTimeout(cutSettled, CUT_GRACE_MS).unref();
    };
    const deadline = (ms: number) => {
      if (cut || Date.now() + ms >= dueAt) return;
      dueAt = Date.now() + ms;
      clearTimeout(timer);
      if (ms <= 0) cutNow();
      else if (ms < Infinity) timer = setTimeout(cutNow, Math.min(ms, MAX_TIMER_MS));
    };
    const done = (async (): Promise<DrainReport> => {
      // Our deadline before the HBONE server's (the same): its timer fires first, so what was cut is counted.
      deadline(deadlineMs);
      this.tunnels.drain();
      const hbone = this.hbone.drain(Math.min(Math.max(deadlineMs, 0), MAX_TIMER_MS));
      try {
        await Promise.race([hbone, afterCut]);
      } finally {
        clearTimeout(timer);
        this.h2.close(false);
        this.h1?.close();
        this.services.close();
        this.tcp.destroyAll();
        this.pool.close(true);
        await this.tracing.shutdown();
      }
      return { durationMs: Date.now() - start, atStart, ...(cut && { cut }) };
    })();
    this.drainRun = { done, deadline };
    return done;
  }

  /**
   * The CONNECT: its authority must be a service port (its routes apply) or a workload of the mesh
   * (sent to directly); anything else is refused, so the waypoint never dials what the mesh does
   * not know.
   */
  private decide(peerPrincipal: string, peerAddress: string, authority: { address: string; port: number }): ConnectDecision | Promise<ConnectDecision> {
    const destination = formatAuthority(authority);
    const svc = this.mesh.service(authority.address, authority.port);
    let target: TunnelContext['target'];
    // A TCP port (its listener a tcp_proxy): relayed as bytes, no HTTP parsed.
    const tcpCluster = svc && this.o.config.table.tcpListeners?.get(svc.listener);
    if (svc && tcpCluster) return this.tcp.connect({ peerPrincipal, peerAddress, service: svc.service, port: svc.port, cluster: tcpCluster, listener: svc.listener, destination });
    if (svc) target = { service: svc.service, listener: svc.listener };
    else {
      const workload = this.mesh.workload(authority.address);
      if (!workload) return { status: 503, reason: `no service or workload at ${destination}` };
      target = { workload, endpoint: authority };
    }
    const tcpFallback = svc && this.o.config.table.tcpFallback?.get(svc.listener);
    const ctx: TunnelContext = { peerPrincipal, peerAddress, peerIp: ipOf(peerAddress), destination, target, ...(tcpFallback !== undefined && { tcpFallback }) };
    return { status: 200, acceptStream: (d) => this.tunnels.accept(d, ctx) };
  }
}

/** The node facts for Istio's span tags: the identity's namespace and service account (a waypoint's is its Gateway's name). */
function tracingOptions(o: WaypointOptions): TracingOptions {
  const m = /\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(o.identity);
  const [namespace, sa] = m ? [m[1]!, m[2]!] : ['', ''];
  return {
    ...o.tracing,
    random: o.tracing?.random ?? o.random,
    node: { nodeId: `waypoint~${namespace}~${sa}`, namespace, canonicalService: sa, canonicalRevision: 'latest', meshId: o.trustDomain, clusterId: 'Kubernetes', ...o.tracing?.node },
  };
}
