// `weft agent`: one per node. Captures enrolled pods' traffic inside each pod (cgroup hooks and
// sk_lookup, or in-pod iptables), relays it, and exports metrics.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WEFT, assertKernelReady, mallocTrim, netnsCookie, socketNetnsCookie } from '../bpf/index.ts';
import { closeQuietly } from '../bpf/fd-passing.ts';
import { IdleTrim } from './admin/idle-trim.ts';
import { serveAdmin } from './admin/servers.ts';
import type { CaptureBackends } from './capture/backend.ts';
import { EbpfCapture } from './capture/ebpf.ts';
import { IptablesCapture } from './capture/iptables.ts';
import { KubePods } from './inpod/kube.ts';
import { NodeProbeRules } from './capture/node-probes.ts';
import { PodManager } from './inpod/pod-manager.ts';
import { serveEnrollment } from './inpod/server.ts';
import { AgentMetrics } from './metrics/metrics.ts';
import { IstioTcpMetrics } from '../telemetry/istio-tcp.ts';
import { batchedLogger } from '../telemetry/log.ts';
import { CertManager } from '../identity/index.ts';
import { engineCache, type ProxyContext } from './proxy/context.ts';
import { LocalPods } from './proxy/node-local/local-pods.ts';
import { HbonePool, createHboneServer } from '../hbone/index.ts';
import { HboneAdmission, type HboneLimits } from '../hbone/admission.ts';
import { relayAddon } from '../hbone/native/addon.ts';
import { nativeSessionOpener } from '../hbone/native/client.ts';
import { nativeRelay } from '../hbone/native/pipe.ts';
import { NativeHboneServer } from '../hbone/native/server.ts';
import { StateGrants } from './proxy/inbound/grants.ts';
import { OutboundGrants } from './proxy/outbound/grants.ts';
import { relay } from '../hbone/relay.ts';
import { MeshState } from './state/mesh-state.ts';
import { loadSnapshot, SnapshotWriter } from './state/snapshot.ts';
import { DeltaXdsClient } from './xds/delta-client.ts';
import { inClusterAccess, loadKubeconfig } from '../kube/client.ts';
import { ensurePrivateDir } from '../util/private-files.ts';
import { startAccessLogExport, ACCESS_LOG_FLUSH_MS } from './access-log-export.ts';
import { LiveConnections } from './proxy/connection.ts';
import { serveHandover, type Giver } from './handover/give.ts';
import { HANDOVER_SOCKET } from './handover/protocol.ts';
import { takeOver } from './handover/take.ts';
import { serverFd } from '../util/server-fd.ts';
import { parseCidrs } from '../util/cidrs.ts';
import { processMemory } from '../util/process-memory.ts';

const EMPTY = MeshState.empty();

export interface AgentOptions {
  node: string;
  socket: string;
  stateDir: string;
  pinRoot: string;
  capture: 'ebpf' | 'iptables';
  /** The node's network namespace, for the probe rules; unset: the agent's own (the lab). */
  nodeNetns?: string;
  dataPath: 'native' | 'node';
  metricsAddress: string;
  metricsPort: number;
  readinessPort: number;
  adminPort: number;
  trustDomain: string;
  rootNamespace: string;
  /** The control plane (xDS and CA); without it the agent only relays in plaintext. */
  xdsAddress?: string;
  rootCert?: string;
  tokenFile?: string;
  controlServerName: string;
  certTtl: number;
  /** Caps on inbound HBONE connections and handshakes (proxy/hbone/admission.ts); defaults when absent. */
  hboneLimits?: Partial<HboneLimits>;
  /** Kubernetes API access (one of them): pods are annotated when enrolled and reconciled at start. */
  kubeconfig?: string;
  inCluster?: boolean;
  /** The access log also over OTLP logs to this URL (off when unset), with these headers (`k=v,...`). */
  otlpLogsEndpoint?: string;
  otlpLogsHeaders?: string;
  otlpLogsTimeout?: number;
  otlpLogsMaxQueue?: number;
  /** The cluster's pod network: unknown addresses in it are refused, not passed through (proxy/context.ts). */
  podCidrs?: string[];
  /** Seconds a stopping or replaced agent relays what is established; 0 or absent: until it ends. */
  drainDeadline?: number;
}

/** setTimeout's longest delay: "no deadline" for drains that take a number. */
const NO_DEADLINE_MS = 2 ** 31 - 1;

export async function runAgent(o: AgentOptions): Promise<void> {
  const log = batchedLogger({ node: o.node, component: 'agent' });
  // First: a bad endpoint or header list fails the start, not the first connection.
  const accessLogExport = o.otlpLogsEndpoint ? await startAccessLogExport({ ...o, otlpLogsEndpoint: o.otlpLogsEndpoint }, log) : undefined;
  mkdirSync(o.stateDir, { recursive: true });
  // Both modes can serve pods side by side; the flag picks the default. eBPF needs the kernel.
  const backends: CaptureBackends = { default: o.capture, iptables: await IptablesCapture.open() };
  try {
    assertKernelReady(); // names the missing program type, helper or mount
    backends.ebpf = EbpfCapture.open(o.pinRoot);
  } catch (e) {
    if (o.capture === 'ebpf') throw e;
    log.warn({ err: (e as Error).message }, 'eBPF capture unavailable; iptables only');
  }
  let ready = false;
  // Heap pages left free by enrollments, certificates and mesh updates go back once things are quiet.
  const idleTrim = new IdleTrim(mallocTrim);
  const metrics = new AgentMetrics(o.capture);
  const istio = new IstioTcpMetrics(metrics.registry);
  if (accessLogExport) metrics.accessLogExport = () => accessLogExport.stats();
  let xds: DeltaXdsClient | undefined;
  // Native data path: the state the relay's reused inbound decisions stand for (proxy/inbound/grants.ts).
  const grants = o.dataPath === 'native' ? new StateGrants() : undefined;
  let certs: CertManager | undefined;
  let cache: SnapshotWriter | undefined;
  if (o.xdsAddress) {
    if (!o.rootCert || !o.tokenFile) throw new Error('--xds-address needs --root-cert and --token-file');
    // Both read for every connection: projected tokens expire and roots rotate.
    const rootPem = () => readFileSync(o.rootCert!, 'utf8');
    const token = () => readFileSync(o.tokenFile!, 'utf8').trim();
    // Last good state and certificates, root-only on the node, for a restart while the control plane is away.
    const cacheDir = join(o.stateDir, 'cache');
    ensurePrivateDir(cacheDir);
    xds = new DeltaXdsClient({ address: o.xdsAddress, nodeId: o.node, tls: { rootPem, serverName: o.controlServerName }, token, log });
    const stateFile = join(cacheDir, 'xds.json');
    try {
      const saved = loadSnapshot(stateFile);
      if (saved) {
        xds.restore(saved.resources);
        log.info({ savedAt: saved.savedAt, workloads: xds.state.workloads.size, policies: xds.state.policies.size }, 'serving from the mesh state kept on the node until the control plane answers');
      }
    } catch (e) {
      log.error({ err: (e as Error).message }, 'mesh state kept on the node not usable; waiting for the control plane');
    }
    const writer = (cache = new SnapshotWriter(stateFile, () => xds!.resources(), log));
    xds.on('update', (state: object) => {
      grants?.observe(state); // every decision the relay reuses lapses with the state it read
      writer.changed();
      idleTrim.poke();
    });
    xds.start();
    certs = new CertManager({ address: o.xdsAddress, rootPem, serverName: o.controlServerName, nodeToken: token, ttlSeconds: o.certTtl, log, cacheDir: join(cacheDir, 'certs') });
    certs.on('fetchFailed', () => {}); // logged by the manager; retried with backoff
    certs.on('issued', () => idleTrim.poke());
    certs.on('rotated', () => idleTrim.poke());
  }
  // Mesh state to act on: from the control plane, or kept from a previous run.
  const synced = () => !xds || xds.synced || xds.restored;
  if (o.dataPath === 'native') relayAddon(); // a missing or broken build fails the start, not the first connection
  // One admission for every pod's 15008; refusals are logged at most every 10 s, with counts.
  let lastRefusalLog = 0;
  const admission: HboneAdmission = new HboneAdmission(o.hboneLimits, (reason) => {
    if (Date.now() - lastRefusalLog < 10_000) return;
    lastRefusalLog = Date.now();
    log.warn({ reason, ...admission.stats() }, 'HBONE connection or CONNECT refused');
  });
  // The pods enrolled here, by address: the pod manager registers them, the proxies look them up.
  const localPods = new LocalPods();
  // Open connections: a draining agent (stopped, or replaced by a new one) exits at zero.
  const live = new LiveConnections();
  const ctx: ProxyContext = {
    live,
    ...(o.podCidrs?.length ? { podNetwork: parseCidrs(o.podCidrs, '--pod-cidrs') } : {}),
    log,
    metrics,
    istio,
    trustDomain: o.trustDomain,
    rootNamespace: o.rootNamespace,
    state: () => xds?.state ?? EMPTY,
    synced,
    engine: engineCache(o.rootNamespace),
    certs,
    agentPorts: new Set([WEFT.PORT_OUTBOUND, WEFT.PORT_INBOUND, WEFT.PORT_HBONE, o.adminPort, o.metricsPort, o.readinessPort]),
    localPods,
    accessLogExport,
    ...(o.dataPath === 'native'
      ? { pool: new HbonePool({ open: nativeSessionOpener() }), relay: nativeRelay, nativeAccept: true, grants, outGrants: new OutboundGrants(), serveHbone: (opts) => new NativeHboneServer({ ...opts, admission }) }
      : { pool: new HbonePool(), relay, serveHbone: (opts) => createHboneServer({ ...opts, admission }) }),
  };
  const pods = new PodManager(backends, log, metrics, join(o.stateDir, 'inpod'), ctx, localPods);
  metrics.captureCounters = () => pods.counters();
  // The relay holds some of them, for the inbound connections it dials on reused decisions.
  metrics.dialSocketsReady = () => pods.dialSocketsReady() + (o.dataPath === 'native' ? relayAddon().stats().expressFds : 0);
  const kube = o.kubeconfig || o.inCluster ? new KubePods(o.kubeconfig ? loadKubeconfig(o.kubeconfig) : inClusterAccess(), o.node, log) : undefined;
  pods.hooks = kube;
  // Before any pod is (re-)adopted, and a failure stops the start: the exemption in every pod
  // must never be usable from outside the node.
  const probeRules = await NodeProbeRules.install(o.nodeNetns);
  pods.onPodIps = (ips) => {
    idleTrim.poke(); // after every enrollment, release and re-adoption
    return probeRules.sync(ips);
  };
  const whenSynced = async (ms = 10_000) => {
    for (const end = Date.now() + ms; !synced() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
    return synced();
  };
  // An upgrade: the agent running on this node (if any) hands over every listening socket, so
  // nothing is ever closed and no connection refused. A failure here fails the start: listening
  // anew next to a live agent would collide with it, and its pods would be left in doubt.
  const handoverPath = join(o.stateDir, HANDOVER_SOCKET);
  const handoverStart = Date.now();
  let handoverMs: number | undefined;
  const inherited = takeOver(handoverPath, log);
  if (inherited && !(await whenSynced(30_000))) {
    inherited.abort('no mesh state within 30 s');
    inherited.closeUnused(new Set());
    throw new Error('taking over from the running agent: no mesh state within 30 s (control plane unreachable and nothing kept on the node); the running agent carries on');
  }
  // Admin listeners are worth taking only in the same network namespace (the lab's agents share
  // the node's); a DaemonSet's new pod has its own, where its probes and scrapes go.
  if (inherited) {
    const own = netnsCookie('/proc/self/ns/net');
    for (const role of ['metrics', 'readiness', 'admin'] as const) {
      const fd = inherited.node[role];
      if (fd !== undefined && socketNetnsCookie(fd) !== own) {
        closeQuietly(fd);
        delete inherited.node[role];
      }
    }
  }
  await pods.adopt(inherited?.pods);
  certs?.pruneCache(pods.list().map((p) => ({ trustDomain: o.trustDomain, namespace: p.info.namespace, serviceAccount: p.info.serviceAccount })));
  const admin = await serveAdmin({
    ...o,
    inherited: inherited?.node,
    metrics,
    // Ready once there is mesh state (or at once without a control plane), and not while the
    // control plane keeps refusing this node's credential: that does not heal by retrying.
    ready: () => ready && synced() && !xds?.authFailing,
    configDump: () => {
      const s = ctx.state();
      return {
        node: o.node,
        pid: process.pid,
        captureMode: o.capture,
        xds: xds && { connected: xds.connected, synced: xds.synced, restored: xds.restored, authFailures: xds.authFailures, lastError: xds.lastError, nacks: xds.nacks, version: s.version },
        workloads: [...s.workloads.values()],
        services: [...s.services.values()],
        policies: [...s.policies.values()],
        certificates: certs?.snapshot() ?? [],
        pods: pods.list(),
        hbonePool: ctx.pool.stats(),
        hboneAdmission: { limits: admission.limits, ...admission.stats() },
        dataPath: o.dataPath,
        relay: o.dataPath === 'native' ? relayAddon().stats() : undefined,
        liveConnections: live.count,
        takenOverFrom: inherited?.from,
        handoverMs,
        // Bytes: V8's heap and the kernel's split of RSS (file pages are mostly the node binary).
        memory: { ...processMemory(), trim: idleTrim.stats() },
      };
    },
  });
  // Enrollments wait while this agent hands over, then go to the new one (handover/give.ts).
  let handover: 'none' | 'preparing' | 'handed' = 'none';
  let settled: Promise<void> = Promise.resolve();
  let settle = () => {};
  const gate = async () => {
    while (handover === 'preparing') await settled;
    return handover === 'handed' ? ('forward' as const) : ('serve' as const);
  };
  const workloads = () => [...ctx.state().workloads.values()].map((w) => ({ namespace: w.namespace, name: w.name, status: w.status }));
  const enroll = await serveEnrollment(o.socket, pods, log, { workloads, whenSynced, inheritedFd: inherited?.node.enrollment, gate });
  if (inherited) {
    // The old agent accepts until told: give HBONE servers their certificates first (bounded;
    // after it, peers wait in the backlog for them as at any start).
    for (const end = Date.now() + 30_000; !pods.serving() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
    inherited.ready();
    handoverMs = Date.now() - handoverStart;
    log.info({ from: inherited.from, pods: pods.list().length, serving: pods.serving(), handoverMs }, 'took over from the running agent, which now drains');
  }
  ready = true;
  log.info({ capture: o.capture, socket: o.socket, pods: pods.list().length }, 'agent ready');
  // After the socket is up (new pods need not wait): pods that ran while no agent did.
  let stopping = false;
  if (kube) void kube.reconcileUntilSettled(pods, () => stopping);

  /** Everything closed, then the process ends (after the access log is flushed). */
  const exit = (why: string) => {
    log.info({ why, liveConnections: live.count }, 'agent exits');
    idleTrim.close();
    xds?.close();
    if (handover !== 'handed') cache?.flush(); // else the new agent's is newer
    certs?.close();
    ctx.pool.close(true);
    pods.close();
    backends.ebpf?.close();
    backends.iptables?.close();
    // Access-log records still queued: sent, or given up at the deadline.
    if (!accessLogExport) process.exit(0);
    void accessLogExport.shutdown(ACCESS_LOG_FLUSH_MS).finally(() => process.exit(0));
  };

  /**
   * Stop accepting (after a handover the sockets live on in the new agent; after SIGTERM alone
   * they close and capture fails closed), GOAWAY every HTTP/2 session, relay what is established
   * until it ends or the drain deadline passes, then exit.
   */
  const drain = (why: string) => {
    if (stopping) return;
    stopping = true;
    ready = false;
    const deadlineMs = o.drainDeadline ? o.drainDeadline * 1000 : NO_DEADLINE_MS;
    log.info({ why, liveConnections: live.count, drainDeadlineSeconds: o.drainDeadline || 'none' }, handover === 'handed' ? 'agent handed over; draining what it relays' : 'agent stopping; pods stay captured and new connections fail until an agent returns; draining what it relays');
    handoverServer.close();
    enroll.close();
    admin.forEach((s) => s.close());
    if (handover === 'handed') xds?.close(); // the new agent keeps the node's state from here on
    const drained = pods.retire(deadlineMs);
    ctx.pool.close(false);
    const deadline = setTimeout(() => exit(`drain deadline of ${o.drainDeadline} s passed`), deadlineMs);
    void Promise.all([drained, live.idle()]).then(() => {
      clearTimeout(deadline);
      exit('drained');
    });
  };

  const giver: Giver = {
    async prepare() {
      handover = 'preparing';
      settled = new Promise((r) => (settle = r));
      pods.freeze();
      const list = await pods.listeners();
      return { pods: list, node: { enrollment: serverFd(enroll), metrics: serverFd(admin[0]), readiness: serverFd(admin[1]), admin: serverFd(admin[2]) } };
    },
    handedOver(by) {
      handover = 'handed';
      settle();
      drain(`handed over to the agent with pid ${by}`);
    },
    resume(reason) {
      handover = 'none';
      pods.thaw();
      settle();
      log.warn({ reason }, 'handover abandoned; this agent serves on');
    },
  };
  const handoverServer = await serveHandover(handoverPath, giver, log);

  let interrupts = 0;
  process.on('SIGTERM', () => drain('SIGTERM'));
  process.on('SIGINT', () => (++interrupts > 1 ? exit('second SIGINT') : drain('SIGINT')));
}
