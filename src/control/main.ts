// `weft control`: weft's istiod. Configuration (a watched directory of Kubernetes YAML, or the
// Kubernetes API) becomes the mesh model, served to agents over Delta ADS (and Envoy config to
// waypoints and proxyless gRPC over SotW ADS); it is also the mesh CA. Ports as istiod: 15010
// plaintext xDS (optional: it answers anyone), 15012 TLS xDS + CA (agents and waypoints
// authenticate), 15014 metrics, readiness and (loopback clients only) debug.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerHealthMetrics } from '../util/metrics.ts';
import { TYPE_ADDRESS } from '../api/codec.ts';
import { adsService } from '../api/protos.ts';
import { CACERTS_FILES, CertificateAuthority, StaticTokenAuthenticator, StaticWorkloadTokenAuthenticator, caServerCredentials, registerCAService, type CAOptions, type NodeAuthenticator, type WorkloadAuthenticator } from './ca/index.ts';
import type { TokenReviewAuthenticator } from './ca/token-review.ts';
import type { ConfigSnapshot } from './config/config-store.ts';
import { openConfigSource, type SourceOptions } from './config/source.ts';
import type { MeshModel } from './model/mesh-model.ts';
import { DEFAULT_MESH, type MeshOptions } from './model/networking/workloads.ts';
import { DeltaAdsServer } from './xds/delta-ads.ts';
import { EnvoyPublisher } from './xds/envoy/build.ts';
import { Analyzer } from './analyze.ts';
import { listenGrpc, listenHttp, type Listener } from './listen.ts';
import { ENVOY_TYPES } from './xds/envoy/messages.ts';
import { SotwAdsServer } from './xds/envoy/sotw-ads.ts';
import { ResourceStore } from './xds/resources.ts';
import type { ScopedCaller } from './xds/streams.ts';
import { WorkloadApiPublisher } from './xds/workload-api.ts';

export interface ControlOptions extends SourceOptions {
  caDir?: string;
  /** On Kubernetes: where the self-signed root's Secret (istio-ca-secret) is kept. */
  caNamespace: string;
  trustDomain: string;
  /** Static node credentials (the lab); without them, TokenReview against the Kubernetes API. */
  nodeTokens?: string;
  /** Static workload credentials `{token: "ns/sa"}` (the lab's waypoints); without them, TokenReview on Kubernetes, none with a directory. */
  workloadTokens?: string;
  agentServiceAccounts: string[];
  tokenAudiences: string[];
  /** false: no plaintext xDS (`--no-plain-address`). */
  plainAddress: string | false;
  tlsAddress: string;
  metricsAddress: string;
  serverNames: string[];
  serverIps: string[];
  rootCertOut?: string;
  /**
   * On Kubernetes: deploy Gateways of class istio-waypoint with this image (as istiod does); unset,
   * waypoint Gateways are read for the model but not deployed.
   */
  waypointImage?: string;
  /** host:port waypoints reach this control plane's TLS xDS and CA at; default the first --server-name on the TLS port. */
  waypointControlAddress?: string;
  /** Listen with SO_REUSEPORT, so a second replica can bind the same addresses on this host (the lab's rolling upgrade). */
  reusePort?: boolean;
  /** On SIGTERM, xDS streams are ended spread over this many ms (default 2000). */
  drainSpreadMs?: number;
  /** On SIGTERM, exit after at most this many ms whatever is still open (default 10000). */
  drainDeadlineMs?: number;
  /** On Kubernetes: run the leader-only duties under a Lease (default); false runs them unconditionally (one replica). */
  leaderElection?: boolean;
  /** The Lease's name (in --ca-namespace). */
  leaderLease?: string;
}

/**
 * A plugged-in CA when --ca-dir holds Istio's cacerts files; else a self-signed root, kept in
 * --ca-dir with --config-dir and in the Secret istio-ca-secret on Kubernetes (as istiod), so a
 * restarted or second replica signs with the same root.
 */
async function caSource(o: ControlOptions, log: Logger): Promise<{ source: CAOptions['source']; describe: string }> {
  if (o.caDir && CACERTS_FILES.every((f) => existsSync(join(o.caDir!, f)))) return { source: { type: 'plugged', dir: o.caDir }, describe: `plugged (${o.caDir})` };
  if (o.configDir !== undefined) return { source: { type: 'self-signed', dir: o.caDir }, describe: `self-signed (${o.caDir ?? 'in memory'})` };
  const [{ loadKubeConfig }, { CA_SECRET, secretRootStore }] = await Promise.all([import('./config/kube-api.ts'), import('./ca/root-secret.ts')]);
  return { source: { type: 'self-signed', store: secretRootStore(loadKubeConfig(o), o.caNamespace, log) }, describe: `self-signed (Secret ${o.caNamespace}/${CA_SECRET})` };
}

/**
 * Node agents: lab: a token file. Kubernetes: the agents' bound ServiceAccount tokens, checked by
 * TokenReview. A directory without a token file (proxyless gRPC on 15010 only): no node
 * credential exists, so 15012's xDS and the CA refuse every agent.
 * Workloads asking the CA for their own identity (waypoints): lab: --workload-tokens. Kubernetes:
 * their projected ServiceAccount tokens, by TokenReview (the agents' reviews and caches, when
 * those are reviewed too). A directory without the file: the CA refuses every workload.
 */
async function authenticators(o: ControlOptions, log: Logger): Promise<{ nodes: NodeAuthenticator; workloads?: WorkloadAuthenticator }> {
  const kube = o.configDir === undefined;
  let reviews: TokenReviewAuthenticator | undefined;
  const reviewer = async () => {
    if (reviews) return reviews;
    const [{ loadKubeConfig }, tr] = await Promise.all([import('./config/kube-api.ts'), import('./ca/token-review.ts')]);
    return (reviews = new tr.TokenReviewAuthenticator(loadKubeConfig(o), { agentServiceAccounts: o.agentServiceAccounts, audiences: o.tokenAudiences }));
  };
  let nodes: NodeAuthenticator;
  if (o.nodeTokens) nodes = new StaticTokenAuthenticator(o.nodeTokens);
  else if (kube) nodes = await reviewer();
  else {
    log.info('no --node-tokens: no node agent can authenticate; xDS on the TLS port and the CA refuse every agent');
    nodes = { authenticate: async () => undefined };
  }
  let workloads: WorkloadAuthenticator | undefined;
  if (o.workloadTokens) workloads = new StaticWorkloadTokenAuthenticator(o.workloadTokens);
  else if (kube) workloads = (await reviewer()).workloads;
  else log.info('no --workload-tokens: the CA refuses every workload asking for its own identity');
  return { nodes, workloads };
}

/** On Kubernetes, istio-ca-root-cert in every namespace (the agent DaemonSet mounts it); the lab gets a file. */
async function publishRootCert(o: ControlOptions, rootPem: string, log: Logger): Promise<{ close(): void } | undefined> {
  if (o.configDir !== undefined) return undefined;
  const [{ loadKubeConfig }, { startRootCertPublisher }] = await Promise.all([import('./config/kube-api.ts'), import('./ca/root-cert-configmap.ts')]);
  return startRootCertPublisher(loadKubeConfig(o), rootPem, log);
}

/** On Kubernetes with --waypoint-image: waypoint Gateways become Deployments (src/control/gateway/waypoints.ts). */
async function deployWaypoints(o: ControlOptions, log: Logger): Promise<{ close(): void } | undefined> {
  if (o.configDir !== undefined || !o.waypointImage) return undefined;
  const [{ loadKubeConfig }, { WaypointReconciler }] = await Promise.all([import('./config/kube-api.ts'), import('./gateway/waypoints.ts')]);
  const tlsPort = o.tlsAddress.split(':').pop();
  const controlAddress = o.waypointControlAddress ?? `${o.serverNames[0] ?? 'localhost'}:${tlsPort}`;
  const r = new WaypointReconciler(loadKubeConfig(o), log, { image: o.waypointImage, controlAddress, trustDomain: o.trustDomain });
  r.start(); // does not block: a missing Gateway API or a failing write is retried
  log.info({ image: o.waypointImage, controlAddress }, 'deploying waypoint Gateways');
  return r;
}

/**
 * The writes to the Kubernetes API that must not run on two replicas at once: the root-cert
 * ConfigMaps and the waypoint Deployments (and their Gateways' status). On Kubernetes with leader
 * election they run while this replica holds the Lease; otherwise at once. (The CA Secret is not
 * among them: every replica needs the root before it can serve, and its create-if-absent is
 * already safe to race, root-secret.ts.)
 */
async function leaderDuties(o: ControlOptions, rootPem: string, log: Logger): Promise<{ stop(): Promise<void> }> {
  let running: { close(): void }[] = [];
  let generation = 0;
  const start = async () => {
    const mine = ++generation;
    const started = (await Promise.all([publishRootCert(o, rootPem, log), deployWaypoints(o, log)])).filter((d): d is { close(): void } => !!d);
    // Leadership lost (or stopped) while they were starting: they must not keep running.
    if (mine !== generation) for (const d of started) d.close();
    else running = started;
  };
  const stopDuties = () => {
    generation++;
    for (const d of running.splice(0)) d.close();
  };
  if (o.configDir !== undefined || o.leaderElection === false) {
    await start();
    return { stop: async () => stopDuties() };
  }
  const [{ loadKubeConfig }, { LeaderElector }] = await Promise.all([import('./config/kube-api.ts'), import('./leader.ts')]);
  const identity = `${process.env.POD_NAME ?? hostname()}_${randomBytes(4).toString('hex')}`;
  const elector = new LeaderElector(loadKubeConfig(o), {
    namespace: o.caNamespace,
    name: o.leaderLease ?? 'weft-control-leader',
    identity,
    log,
    onStartedLeading: () => void start().catch((e: Error) => log.error({ err: e.message }, 'starting the leader-only duties failed')),
    onStoppedLeading: stopDuties,
  });
  elector.start();
  return { stop: () => elector.stop() };
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 peer). */
const isLoopback = (address: string | undefined) => !!address && (address === '::1' || /^(::ffff:)?127\./i.test(address));

/** Written only when it differs, and replaced whole: agents read it on every connection, and a second replica writes the same root. */
function writeRootCert(file: string, pem: string): void {
  mkdirSync(dirname(file), { recursive: true });
  if (existsSync(file) && readFileSync(file, 'utf8') === pem) return;
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, pem);
  renameSync(tmp, file);
}

export async function runControl(o: ControlOptions): Promise<void> {
  const log = pino({ base: { component: 'control', pid: process.pid } }); // the pid tells replicas sharing a log apart
  const mesh: MeshOptions = { ...DEFAULT_MESH, trustDomain: o.trustDomain };
  const caFrom = await caSource(o, log);
  const ca = await CertificateAuthority.create({ trustDomain: o.trustDomain, source: caFrom.source });
  if (o.rootCertOut) writeRootCert(o.rootCertOut, ca.rootPem); // the lab's istio-ca-root-cert ConfigMap

  const registry = new Registry();
  registerHealthMetrics(registry);
  const problemsGauge = new Gauge({ name: 'weft_control_config_problems', help: 'Invalid configuration objects skipped', registers: [registry] });
  // A build: snapshot -> model -> encoded resources -> deltas written to every stream.
  const builds = new Histogram({ name: 'weft_control_model_build_seconds', help: 'Time from a configuration snapshot to its changes written to every xDS stream', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry] });
  const nacks = new Counter({ name: 'weft_control_xds_nacks_total', help: 'xDS NACKs from clients', labelNames: ['type_url'] as const, registers: [registry] });
  const clients = new Gauge({ name: 'weft_control_xds_clients', help: 'Connected xDS clients', registers: [registry] });
  const xdsRefused = new Counter({ name: 'weft_control_xds_refused_total', help: 'xDS streams refused on the TLS port, by reason', labelNames: ['reason'] as const, registers: [registry] });
  const caResults = new Counter({ name: 'weft_control_ca_requests_total', help: 'Certificate requests by result', labelNames: ['result'] as const, registers: [registry] });

  const store = new ResourceStore();
  const workloadApi = new WorkloadApiPublisher(store);
  const envoyApi = new EnvoyPublisher(store);
  const analyzer = new Analyzer(mesh);
  let model: MeshModel | undefined;
  let reported = new Set<string>();
  const rebuild = (snap: ConfigSnapshot) => {
    const end = builds.startTimer();
    const a = analyzer.run(snap);
    model = a.model;
    // Log each problem when it appears, not on every push (pods change constantly).
    for (const p of a.problems) if (!reported.has(p)) log.warn({ problem: p }, 'invalid configuration skipped');
    reported = new Set(a.problems);
    problemsGauge.set(a.problems.length);
    workloadApi.publish(model);
    // Envoy v3 resources for proxyless gRPC (and waypoints), in the warming order CDS, EDS, LDS, RDS.
    envoyApi.publish(a.envoy);
    end();
  };
  const source = await openConfigSource(o, log, registry);
  source.on('update', rebuild);
  await source.start();
  const duties = await leaderDuties(o, ca.rootPem, log);

  const ads = new DeltaAdsServer(store, log, {
    onNack: (t) => nacks.inc({ type_url: t }),
    onConnect: () => clients.set(ads.connected + sotw.connected),
  });
  const sotw: SotwAdsServer = new SotwAdsServer(store, log, {
    onNack: (t) => nacks.inc({ type_url: t }),
    onConnect: () => clients.set(ads.connected + sotw.connected),
  });
  const { nodes: authenticator, workloads } = await authenticators(o, log);

  // 15010: plaintext, unauthenticated (as istiod), for proxyless gRPC clients without credentials
  // and local debugging. It answers anyone who can reach it: `weft install` leaves it off.
  let plain: grpc.Server | undefined;
  const listeners: Listener[] = [];
  if (o.plainAddress !== false) {
    plain = new grpc.Server();
    plain.addService(adsService().service, { DeltaAggregatedResources: ads.handler(), StreamAggregatedResources: sotw.handler() });
    listeners.push(await listenGrpc(plain, o.plainAddress, grpc.ServerCredentials.createInsecure(), '--plain-address', !!o.reusePort));
  }

  // 15012: TLS with a server certificate from the mesh CA. Agents present their node token and get
  // every type (the workload API over Delta, Envoy config over Delta or SotW). A workload (a
  // waypoint) presents its own service-account token and gets Envoy config only, on either
  // variant (one authorization for both handlers), as Istio's waypoints do:
  // the workload API is the node agents' view of every workload, and a workload stream asking for
  // it is ended PERMISSION_DENIED. Workloads asking the CA for their own certificate use that token too.
  const tls = new grpc.Server();
  const serverCert = await ca.issueServerCert({ dnsNames: o.serverNames, ipAddresses: o.serverIps });
  const envoyOnly: ReadonlySet<string> = new Set(ENVOY_TYPES);
  // A waypoint also needs the workload API's addresses: which workload an endpoint is and the
  // identity to expect of it. Only the service accounts waypoint Gateways run as get them.
  const waypointTypes: ReadonlySet<string> = new Set([...ENVOY_TYPES, TYPE_ADDRESS]);
  const authorize = async (call: grpc.ServerDuplexStream<unknown, unknown>): Promise<string | ScopedCaller | undefined> => {
    const auth = call.metadata.get('authorization')[0];
    const token = typeof auth === 'string' ? /^Bearer (.+)$/.exec(auth)?.[1] : undefined;
    const node = token ? await authenticator.authenticate(token).catch(() => undefined) : undefined;
    if (node) return node;
    // Only when no node matched: a node token keeps its whole view whatever else it might also prove.
    const sa = token && workloads ? await workloads.authenticate(token).catch(() => undefined) : undefined;
    if (sa) {
      const waypoint = model?.isWaypointIdentity(sa.namespace, sa.serviceAccount) ?? false;
      const who = `${waypoint ? 'waypoint' : 'workload'} ${sa.namespace}/${sa.serviceAccount}`;
      return {
        who,
        types: waypoint ? waypointTypes : envoyOnly,
        why: waypoint
          ? "a waypoint's credential gets Envoy config (LDS, RDS, CDS, EDS) and the workload API's addresses"
          : 'a workload credential gets Envoy config (LDS, RDS, CDS, EDS) only; the workload API serves node agents',
        onDenied: (typeUrl, message) => {
          xdsRefused.inc({ reason: 'type_not_allowed' });
          log.warn({ peer: call.getPeer(), workload: `${sa.namespace}/${sa.serviceAccount}`, typeUrl }, `xds stream refused: ${message}`);
        },
      };
    }
    xdsRefused.inc({ reason: 'unauthenticated' });
    log.warn({ peer: call.getPeer() }, workloads ? 'xds client refused: no valid node or workload credential' : 'xds client refused: no valid node credential');
    // An 'error' event is how grpc-js ends a server stream with a status; destroy() would drop
    // the stream without one, and the client would wait on it forever instead of retrying.
    call.emit('error', Object.assign(new Error(workloads ? 'node or workload credential required' : 'node credential required'), { code: grpc.status.UNAUTHENTICATED }));
    return undefined;
  };
  tls.addService(adsService().service, { DeltaAggregatedResources: ads.handler(authorize), StreamAggregatedResources: sotw.handler(authorize) });
  registerCAService(tls, {
    ca,
    authenticator,
    workloads,
    canIssue: (node, id) => model?.canIssue(node, id) ?? false,
    log,
    onResult: (r) => caResults.inc({ result: r.code === grpc.status.OK ? 'issued' : grpc.status[r.code] ?? String(r.code) }),
  });
  listeners.push(await listenGrpc(tls, o.tlsAddress, caServerCredentials(serverCert), '--tls-address', !!o.reusePort));

  let draining = false;
  const metrics = await listenHttp((req, res) => {
    if (req.url === '/metrics') void registry.metrics().then((t) => res.writeHead(200, { 'content-type': registry.contentType }).end(t));
    // Debug endpoints show every workload, identity and policy: loopback clients only (kubectl
    // port-forward, a shell in the pod), as istiod's localhost bypass; /metrics and /ready stay open.
    else if (req.url?.startsWith('/debug') && !isLoopback(req.socket.remoteAddress)) res.writeHead(403, { 'content-type': 'text/plain' }).end('debug endpoints answer loopback clients only (kubectl port-forward)\n');
    else if (req.url === '/debug/config_dump') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ clients: ads.clients(), deltaSubscriptions: ads.subscriptions(), sotwClients: sotw.clients(), problems: [...reported], model: model && { workloads: model.workloads, services: model.services, policies: model.policies } }, null, 2));
    // Draining: not ready, so a Service stops sending new clients here.
    else if (req.url === '/ready') res.writeHead(model && !draining ? 200 : 503).end();
    else res.writeHead(404).end();
  }, o.metricsAddress, '--metrics-address', !!o.reusePort);
  log.info({ configDir: o.configDir, kubeconfig: o.kubeconfig, inCluster: o.inCluster, plain: o.plainAddress, tls: o.tlsAddress, ca: caFrom.describe, trustDomain: o.trustDomain }, 'control plane ready');

  // Drain (SIGTERM: a rolling update, or the lab's upgrade): stop accepting connections and send
  // GOAWAY on those open (tryShutdown: calls in flight, such as CSRs being signed, finish; new ones
  // go to a new connection, another replica), end the xDS streams with UNAVAILABLE spread over
  // drainSpreadMs so a fleet of agents does not reconnect in the same millisecond, then exit once
  // every call has ended or at drainDeadlineMs, whichever comes first. Agents keep serving their
  // last state meanwhile and resume elsewhere from the versions they hold.
  const spreadMs = o.drainSpreadMs ?? 2000;
  const deadlineMs = o.drainDeadlineMs ?? 10_000;
  if (spreadMs >= deadlineMs) throw new Error(`--drain-spread-ms ${spreadMs} must be below --drain-deadline-ms ${deadlineMs}: streams would still be open at the deadline`);
  const drain = async (signal: string) => {
    if (draining) return;
    draining = true;
    const started = Date.now();
    const deadline = setTimeout(() => {
      log.warn({ afterMs: Date.now() - started, streams: ads.connected + sotw.connected }, 'drain deadline passed; exiting with calls still open');
      process.exit(0);
    }, deadlineMs);
    log.info({ signal, streams: ads.connected + sotw.connected, spreadMs, deadlineMs }, 'draining: no new connections; ending xDS streams so clients move to another replica');
    for (const l of listeners) l.close();
    const closed = [tls, ...(plain ? [plain] : [])].map((s) => new Promise<void>((r) => s.tryShutdown(() => r())));
    await Promise.all([duties.stop(), ads.drain(spreadMs), sotw.drain(spreadMs)]);
    await Promise.all(closed);
    clearTimeout(deadline);
    source.close();
    metrics.close();
    log.info({ afterMs: Date.now() - started }, 'drained; exiting');
    process.exit(0);
  };
  process.on('SIGTERM', () => void drain('SIGTERM'));
  process.on('SIGINT', () => void drain('SIGINT'));
}
