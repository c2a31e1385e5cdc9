// `weft waypoint run`: the waypoint library as a process, with the flags the waypoint Deployment
// passes (src/kube/waypoint.ts waypointArgs, the contract between the rendering and this process).
// Its certificate comes from the mesh CA under its own service-account token (workload mode: the CA
// issues the token's own identity, nothing else), or from PEM files (--cert/--key, for tests and
// hand-run waypoints); routes, clusters and endpoints from the control plane's Envoy Delta ADS, the
// mesh from its workload API (Delta ADS too), over TLS with the mesh root; HBONE on 15008; readiness
// on --status-address (/healthz/ready: a certificate and the first configuration); Istio's
// metrics on --metrics-address (/metrics, /stats/prometheus), apart from the data path.
// SIGTERM drains (runWaypoint's end): not ready from then on, HTTP ended gracefully, TCP relayed
// until it ends or --drain-deadline passes, then the process exits.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { X509Certificate } from 'node:crypto';
import { Registry } from 'prom-client';
import { registerHealthMetrics } from '../util/metrics.ts';
import { formatSpiffe, parseSpiffe, type SpiffeId } from '../api/spiffe.ts';
import { status as grpcStatus } from '@grpc/grpc-js';
import { CertManager, type WorkloadCert } from '../identity/index.ts';
import { batchedLogger } from '../telemetry/log.ts';
import type { Credentials } from '../hbone/settings.ts';
import { Waypoint } from './waypoint.ts';
import { WaypointConfig } from './xds/config.ts';
import { MeshWatch } from './xds/mesh-watch.ts';

export interface WaypointRunOptions {
  /** The control plane's xDS, host:port (TLS with the mesh root, checking controlServerName). */
  controlAddress: string;
  /** The mesh CA, host:port; the control address when absent. */
  caAddress?: string;
  controlServerName: string;
  /** The mesh root (PEM), re-read so a rotated root is picked up. */
  rootCert: string;
  /** The waypoint's own service-account token (projected, audience istio-ca), re-read per use. */
  tokenFile?: string;
  /** PEM files instead of the CA: the certificate chain (leaf first) and its key. */
  cert?: string;
  key?: string;
  trustDomain: string;
  /** The waypoint's namespace and service account (the Deployment sets POD_NAMESPACE and SERVICE_ACCOUNT). */
  namespace?: string;
  serviceAccount?: string;
  waypointFor?: string;
  forServiceAccount?: string;
  /** The waypoint's Gateway (its name in its namespace): policies targeting it apply to all it serves. */
  gateway?: string;
  meshAddress: string;
  statusAddress: string;
  metricsAddress: string;
  nodeId?: string;
  /** A CA bundle (PEM file) trusted for remote JWKS servers besides the system's; JWKS_CA_CERTS when absent. */
  jwksCa?: string;
  /** Seconds a drain (SIGTERM) lets open tunnels run before closing them, 0 for no deadline; WEFT_DRAIN_DEADLINE, else 30. */
  drainDeadline?: string;
}

/** The waypoint's drain deadline when neither --drain-deadline nor WEFT_DRAIN_DEADLINE says: under the Deployment's grace (src/kube/waypoint.ts). */
export const DEFAULT_DRAIN_DEADLINE_S = 30;

/**
 * The drain deadline in ms (Infinity for 0, no deadline) from the flag, else the environment, else
 * the default; a value that is not a non-negative number of seconds is an error naming its source.
 */
export function drainDeadlineMs(flag: string | undefined, env: string | undefined = process.env.WEFT_DRAIN_DEADLINE): number {
  const [raw, from] = flag !== undefined ? [flag, '--drain-deadline'] : env !== undefined && env !== '' ? [env, 'WEFT_DRAIN_DEADLINE'] : [String(DEFAULT_DRAIN_DEADLINE_S), 'default'];
  const s = Number(raw.trim());
  if (raw.trim() === '' || !Number.isFinite(s) || s < 0) throw new Error(`${from}: ${JSON.stringify(raw)} is not a number of seconds (0: no deadline)`);
  return s === 0 ? Infinity : s * 1000;
}

/** The waypoint's identity and a getter of its current credentials: from the CA, or from files. */
async function credentialsOf(o: WaypointRunOptions, log: ReturnType<typeof batchedLogger>): Promise<{ id: SpiffeId; credentials: () => Credentials; close: () => void }> {
  const root = () => readFileSync(o.rootCert, 'utf8');
  if (o.cert || o.key) {
    if (!o.cert || !o.key) throw new Error('--cert and --key go together');
    const credentials = (): Credentials => ({ certChain: readFileSync(o.cert!, 'utf8'), key: readFileSync(o.key!, 'utf8'), root: root() });
    const uri = new X509Certificate(credentials().certChain).subjectAltName?.split(/,\s*/).find((e) => e.startsWith('URI:spiffe://'))?.slice(4);
    const id = uri ? parseSpiffe(uri) : undefined;
    if (!id) throw new Error(`--cert ${o.cert}: no SPIFFE identity in the certificate`);
    return { id, credentials, close: () => {} };
  }
  if (!o.tokenFile) throw new Error('a waypoint needs --token-file (its service-account token for the mesh CA), or --cert and --key');
  const namespace = o.namespace ?? process.env.POD_NAMESPACE;
  const serviceAccount = o.serviceAccount ?? process.env.SERVICE_ACCOUNT;
  if (!namespace || !serviceAccount) throw new Error('the waypoint\'s identity: --namespace and --service-account (or POD_NAMESPACE and SERVICE_ACCOUNT) are required');
  const id: SpiffeId = { trustDomain: o.trustDomain, namespace, serviceAccount };
  const certs = new CertManager({
    address: o.caAddress ?? o.controlAddress,
    rootPem: root,
    serverName: o.controlServerName,
    workloadToken: () => readFileSync(o.tokenFile!, 'utf8').trim(),
    identity: id,
    log,
  });
  // Fails closed: no certificate, no listener. Renewals replace it below, without a restart.
  let current = await firstCertificate(certs);
  const keep = (_: SpiffeId, c: typeof current) => (current = c);
  certs.on('issued', keep);
  certs.on('rotated', keep);
  return { id, credentials: () => ({ certChain: current.certChainPem, key: current.keyPem, root: current.rootPem }), close: () => certs.close() };
}

/**
 * The waypoint's first certificate. A CA that cannot be reached yet (the control plane starting or
 * rolling, a slow answer under load) is waited for, retried with the manager's backoff while nothing
 * listens, as istio-agent waits for its first certificate; a CA that refuses the token
 * (UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT) ends the start, since retrying will not change its answer.
 */
export async function firstCertificate(certs: CertManager): Promise<WorkloadCert> {
  const fatal = new Set([grpcStatus.UNAUTHENTICATED, grpcStatus.PERMISSION_DENIED, grpcStatus.INVALID_ARGUMENT]);
  for (;;) {
    try {
      return await certs.get();
    } catch (e) {
      if (fatal.has((e as { code?: number }).code as number)) throw e;
    }
    // The manager retries on its own (unref'd) timer: wait for its next outcome, holding the process.
    const hold = setInterval(() => {}, 60_000);
    try {
      await new Promise<void>((resolve) => {
        const done = () => {
          certs.off('issued', done);
          certs.off('fetchFailed', done);
          resolve();
        };
        certs.on('issued', done);
        certs.on('fetchFailed', done);
      });
    } finally {
      clearInterval(hold);
    }
  }
}

const hostPort = (s: string, what: string) => {
  const m = /^(.*):(\d+)$/.exec(s);
  if (!m) throw new Error(`${what}: ${s} is not host:port`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
};

/** Listens, or fails naming the flag (an address in use is an error at start, not a crash later). */
const listenOn = (server: Server, a: { host: string; port: number }, flag: string) =>
  new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`${flag} ${a.host}:${a.port}: ${(e as Error).message}`)));
    server.listen(a.port, a.host, () => resolve());
  });

export async function runWaypoint(o: WaypointRunOptions): Promise<void> {
  const drainMs = drainDeadlineMs(o.drainDeadline); // a bad value fails before anything listens
  const log = batchedLogger({ component: 'waypoint' });
  const { id, credentials, close } = await credentialsOf(o, log);
  const uri = formatSpiffe(id);
  const registry = new Registry();
  registerHealthMetrics(registry);
  const xds = {
    address: o.controlAddress,
    nodeId: o.nodeId ?? `waypoint~${id.namespace}~${id.serviceAccount}`,
    log,
    tls: { rootPem: () => readFileSync(o.rootCert, 'utf8'), serverName: o.controlServerName },
    token: o.tokenFile ? () => readFileSync(o.tokenFile!, 'utf8').trim() : undefined,
  };
  const gateway = o.gateway ?? process.env.ISTIO_META_WORKLOAD_NAME;
  const jwksCa = o.jwksCa ?? process.env.JWKS_CA_CERTS;
  const config = new WaypointConfig({
    log, ...(gateway && { gateway: { namespace: id.namespace, name: gateway } }), ...(jwksCa && { jwks: { caPem: readFileSync(jwksCa, 'utf8') } }),
  });
  // HTTP/1.1 tunnels to endpoints are kept for reuse (a CONNECT per request is the main cost otherwise).
  const waypoint = new Waypoint({ credentials, identity: uri, trustDomain: id.trustDomain, config, registry, accessLog: log, h1KeepAlive: {} });
  const mesh = new MeshWatch((m) => waypoint.setMesh(m));
  const clients = [config.connect(xds), mesh.connect(xds)];
  const l = hostPort(o.meshAddress, '--mesh-address');
  await waypoint.listen(l);
  const m = hostPort(o.metricsAddress, '--metrics-address');
  const metrics = createServer((req, res) => {
    if (req.url !== '/metrics' && req.url !== '/stats/prometheus') return void res.writeHead(404).end();
    registry.metrics().then((t) => res.writeHead(200, { 'content-type': registry.contentType }).end(t), () => res.writeHead(500).end());
  });
  await listenOn(metrics, m, '--metrics-address');
  // Ready once it holds a certificate (above) and the control plane's first configuration; not
  // ready from the moment a drain begins (the status port answers until the process exits).
  const s = hostPort(o.statusAddress, '--status-address');
  const status = createServer((req, res) => {
    if (req.url !== '/healthz/ready') return void res.writeHead(404).end();
    res.writeHead(!waypoint.draining && clients.every((c) => c.synced) ? 200 : 503).end();
  });
  await listenOn(status, s, '--status-address');
  log.info({ identity: uri, mesh: o.meshAddress, control: o.controlAddress, for: o.waypointFor ?? 'service', forServiceAccount: o.forServiceAccount }, 'waypoint started');
  // The drain keeps the control plane's configuration and the certificate fresh (tunnels may run for
  // the whole deadline) and answers readiness (503) and metrics until everything has ended.
  const stop = async (signal: string) => {
    const deadline = drainMs === Infinity ? 'none' : drainMs / 1000;
    log.info({ signal, deadlineSeconds: deadline, ...waypoint.stats() }, 'waypoint draining');
    let code = 0;
    try {
      const r = await waypoint.drain(drainMs);
      log.info({ durationMs: r.durationMs, atStart: r.atStart, closedAtDeadline: r.cut ?? null }, 'waypoint drained');
    } catch (e) {
      code = 1;
      log.error({ err: (e as Error).message }, 'waypoint drain failed');
    }
    for (const c of clients) c.close();
    metrics.close();
    status.close();
    close();
    // The log's last lines out before the exit (bounded: a stuck stdout must not hold the process).
    await new Promise<void>((resolve) => {
      setTimeout(resolve, 1000).unref();
      log.flush(() => resolve());
    });
    process.exit(code);
  };
  // A second signal during the drain: SIGTERM again is ignored. Kubernetes sends one SIGTERM and
  // then SIGKILL at the end of the grace period, but supervisors and scripts repeat SIGTERM, and
  // exiting on the repeat would cut the very connections the drain protects; the grace period is the
  // hard stop. SIGINT comes from a person at a terminal: a second Ctrl-C means "now", so it brings the
  // deadline to now, which still closes what is left through the drain (logged, counted) rather than
  // exiting mid-write.
  let draining = false;
  const onSignal = (signal: 'SIGTERM' | 'SIGINT') => {
    if (!draining) {
      draining = true;
      return void stop(signal);
    }
    if (signal === 'SIGINT') {
      log.warn({ signal }, 'waypoint drain cut short: closing what is left now');
      void waypoint.drain(0);
    } else log.info({ signal }, 'waypoint already draining: signal ignored (SIGINT closes what is left now)');
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}
