// `weft waypoint run`: the waypoint library as a process, minimal for now. Its credentials come
// from PEM files (a follow-up fetches them from the CA under the waypoint's service-account token);
// routes, clusters and endpoints from the control plane's Envoy SotW ADS, the mesh from its
// workload API (Delta ADS), both on --xds-address (plaintext or TLS with the mesh root); HBONE on
// 15008; Istio's metrics on --metrics-address (/metrics, /stats/prometheus), apart from the data path.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { parseSpiffe } from '../api/spiffe.ts';
import { batchedLogger } from '../telemetry/log.ts';
import { X509Certificate } from 'node:crypto';
import type { Credentials } from '../hbone/settings.ts';
import { Waypoint } from './waypoint.ts';
import { WaypointConfig } from './xds/config.ts';
import { MeshWatch } from './xds/mesh-watch.ts';

export interface WaypointRunOptions {
  certChain: string;
  key: string;
  root: string;
  xdsAddress: string;
  /** TLS to the control plane with the mesh root, checking this name; plaintext when absent. */
  xdsServerName?: string;
  tokenFile?: string;
  listen: string;
  metricsAddress: string;
  nodeId?: string;
}

const hostPort = (s: string, what: string) => {
  const m = /^(.*):(\d+)$/.exec(s);
  if (!m) throw new Error(`${what}: ${s} is not host:port`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
};

export async function runWaypoint(o: WaypointRunOptions): Promise<void> {
  const log = batchedLogger({ component: 'waypoint' });
  const credentials = (): Credentials => ({ certChain: readFileSync(o.certChain, 'utf8'), key: readFileSync(o.key, 'utf8'), root: readFileSync(o.root, 'utf8') });
  const first = credentials();
  const uri = new X509Certificate(first.certChain).subjectAltName?.split(/,\s*/).find((e) => e.startsWith('URI:spiffe://'))?.slice(4);
  const id = uri ? parseSpiffe(uri) : undefined;
  if (!id) throw new Error(`--cert ${o.certChain}: no SPIFFE identity in the certificate`);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const xds = {
    address: o.xdsAddress,
    nodeId: o.nodeId ?? `waypoint~${id.namespace}~${id.serviceAccount}`,
    log,
    tls: o.xdsServerName ? { rootPem: () => readFileSync(o.root, 'utf8'), serverName: o.xdsServerName } : undefined,
    token: o.tokenFile ? () => readFileSync(o.tokenFile!, 'utf8').trim() : undefined,
  };
  const config = new WaypointConfig();
  const waypoint = new Waypoint({ credentials, identity: uri!, trustDomain: id.trustDomain, config, registry, accessLog: log });
  const mesh = new MeshWatch((m) => waypoint.setMesh(m));
  const clients = [config.connect(xds), mesh.connect(xds)];
  const l = hostPort(o.listen, '--listen');
  await waypoint.listen(l);
  const m = hostPort(o.metricsAddress, '--metrics-address');
  const metrics = createServer((req, res) => {
    if (req.url !== '/metrics' && req.url !== '/stats/prometheus') return void res.writeHead(404).end();
    registry.metrics().then((t) => res.writeHead(200, { 'content-type': registry.contentType }).end(t), () => res.writeHead(500).end());
  });
  metrics.listen(m.port, m.host);
  log.info({ identity: uri, listen: o.listen, xds: o.xdsAddress }, 'waypoint started');
  const stop = async () => {
    for (const c of clients) c.close();
    metrics.close();
    await waypoint.drain();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}
