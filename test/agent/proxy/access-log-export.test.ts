// The agent's access log over OTLP logs, end to end in one process: app connections through the
// agent's own outbound code (proxyOutbound, certificates from a real CA, a real HbonePool over
// mutual TLS to a real HBONE server standing in for a waypoint) with the exporter the agent wires
// in (startAccessLogExport) sending to a real OTLP/HTTP receiver, and the counts read from the
// agent's /metrics. One connection is one record, with the line's fields; a collector that fails,
// is down or hangs changes nothing for the connections, holds at most the cap, and every record it
// cost is counted.
import { closeSync, openSync, rmSync } from 'node:fs';
import { get, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayAddress, Service, Workload } from '../../../src/api/mesh.ts';
import { serveAdmin } from '../../../src/agent/admin/servers.ts';
import { startAccessLogExport } from '../../../src/agent/access-log-export.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { LocalPods } from '../../../src/agent/proxy/node-local/local-pods.ts';
import { proxyOutbound, type OutboundPod } from '../../../src/agent/proxy/outbound/handle.ts';
import { podDialSockets } from '../../../src/agent/proxy/pod-sockets.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';
import { CertificateAuthority } from '../../../src/control/ca/index.ts';
import { HbonePool, createHboneServer, type Credentials } from '../../../src/hbone/index.ts';
import { relay } from '../../../src/hbone/relay.ts';
import { CertManager } from '../../../src/identity/index.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import type { OtlpAccessLogExporter } from '../../../src/telemetry/otlp-logs.ts';
import { SERVER_NAME, id, startCA, tmpDir, type TestCA } from '../../control/ca/helpers.ts';
import { exchange, frontDoor, startHbone, type TestServer } from '../../hbone/harness.ts';
import { OtlpReceiver } from '../../telemetry/otlp-receiver.ts';

const dir = tmpDir();
let ca: TestCA;
let certs: CertManager;
let netnsFd: number;
let door: Awaited<ReturnType<typeof frontDoor>>;
let waypoint: TestServer;
let clientPod: OutboundPod;
const pool = new HbonePool();
const receiver = new OtlpReceiver();
let collector: string;

const key = (name: string) => `shop/${name}.shop.svc.cluster.local`;
const wl = (name: string, addresses: string[], o: { sa?: string; services?: Workload['services']; waypoint?: GatewayAddress } = {}): Workload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: o.sa ?? name,
  node: 'node-a', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: [],
  status: 'HEALTHY', clusterId: 'Kubernetes', ...(o.waypoint ? { waypoint: o.waypoint } : {}),
});
const toWaypoint: GatewayAddress = { hostname: { namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local' }, hboneMtlsPort: 15008 };

/** shop/job (10.244.2.70) is served through the waypoint, one pod at 127.0.0.1 whose 15008 is `port`; the waypoint's Service only if `resolvable`. */
function mesh(port: number, resolvable = true): MeshState {
  const wp = wl('waypoint-0', ['127.0.0.1'], { sa: 'waypoint', services: { [key('waypoint')]: [{ servicePort: 15008, targetPort: port }] } });
  const job = wl('job', ['10.244.2.70'], { waypoint: toWaypoint });
  const client = wl('client', ['10.244.1.5']);
  const svc: Service = { name: 'waypoint', namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local', addresses: ['10.96.0.50'], ports: [{ servicePort: 15008, targetPort: port }], subjectAltNames: [] };
  return MeshState.empty().with({
    workloads: [wp, job, client].map((w) => [w.uid, w] as [string, Workload]),
    services: resolvable ? [[`shop/${svc.hostname}`, svc]] : [],
  });
}

/** An agent as runAgent wires it: its metrics served on /metrics, the access log to `lines` and to OTLP at `endpoint`. */
async function agent(endpoint: string, o: { timeout?: number; maxQueue?: number; resolvable?: boolean } = {}) {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const metrics = new AgentMetrics('iptables');
  const exporter = await startAccessLogExport({ node: 'node-a', otlpLogsEndpoint: endpoint, otlpLogsTimeout: o.timeout, otlpLogsMaxQueue: o.maxQueue }, log, { POD_NAME: 'weft-agent-x1', POD_NAMESPACE: 'istio-system' });
  metrics.accessLogExport = () => exporter.stats();
  const admin = await serveAdmin({ metricsAddress: '127.0.0.1', metricsPort: 0, readinessPort: 0, adminPort: 0, metrics, configDump: () => ({}), ready: () => true });
  const ctx: ProxyContext = {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => mesh(waypoint.port, o.resolvable ?? true), synced: () => true, engine: engineCache('istio-system'), certs, pool, relay,
    serveHbone: (opts) => createHboneServer(opts), localPods: new LocalPods(), accessLogExport: exporter,
  };
  const a = { ctx, lines, exporter, admin, accessLines: () => lines.filter((l) => 'dst.addr' in l) };
  agents.push(a);
  return a;
}
const agents: { exporter: OtlpAccessLogExporter; admin: HttpServer[] }[] = [];

/** One app connection to shop/job:9000 through the agent: what the app read back, or the error. */
async function connect(ctx: ProxyContext, payload = 'hello waypoint'): Promise<string> {
  const { app, agent: s } = await door.connection();
  const done = proxyOutbound(ctx, clientPod, s as Socket, { address: '10.244.2.70', port: 9000 });
  try {
    return (await exchange(app, payload)).toString();
  } catch (e) {
    return `error: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  } finally {
    await done;
  }
}

/** The agent's /metrics, scraped over HTTP: the export's series, by result. */
function scrape(admin: HttpServer[]): Promise<{ records: Record<string, number>; queued?: number }> {
  const port = (admin[0]!.address() as AddressInfo).port;
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => {
        const records: Record<string, number> = {};
        for (const m of text.matchAll(/^weft_agent_access_log_export_records_total\{result="(\w+)"\} (\d+)$/gm)) records[m[1]!] = Number(m[2]);
        const q = /^weft_agent_access_log_export_queued (\d+)$/m.exec(text);
        resolve({ records, queued: q ? Number(q[1]) : undefined });
      });
    }).on('error', reject);
  });
}

async function until(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !(await cond()); ) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  ca = await startCA(await CertificateAuthority.create(), dir);
  for (const sa of ['client', 'waypoint']) ca.scheduled.add(`node-a|spiffe://cluster.local/ns/shop/sa/${sa}`);
  certs = new CertManager({ address: ca.address, rootPem: ca.ca.rootPem, serverName: SERVER_NAME, nodeToken: 'tok-a', ttlSeconds: 3600 });
  const c = await certs.get(id('shop', 'waypoint'));
  const creds: Credentials = { key: c.keyPem, certChain: c.certChainPem, root: c.rootPem };
  waypoint = await startHbone(() => creds);
  waypoint.decide = async () => ({ status: 200, acceptStream: (d) => d.pipe(d) }); // echoes the tunnel
  netnsFd = openSync('/proc/self/ns/net', 'r'); // the test's own netns stands in for the pod's
  clientPod = { uid: 'client-uid', namespace: 'shop', name: 'client', serviceAccount: 'client', ips: ['10.244.1.5'], netnsFd, sockets: podDialSockets(netnsFd) };
  door = await frontDoor();
  collector = `${(await receiver.start()).url}/v1/logs`;
}, 60_000);

afterEach(async () => {
  for (const a of agents.splice(0)) {
    await a.exporter.shutdown(500);
    a.admin.forEach((s) => s.close());
  }
  receiver.logs.length = 0;
  receiver.failWith = undefined;
});

afterAll(async () => {
  door?.close();
  pool.close(true);
  waypoint?.hbone.close();
  certs?.close();
  (clientPod?.sockets as { close?: () => void } | undefined)?.close?.();
  if (netnsFd !== undefined) closeSync(netnsFd);
  await receiver.close();
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the agent\'s access log over OTLP logs', () => {
  it('a connection is exactly one record at the collector, with the line\'s fields, INFO, and the agent as resource', async () => {
    const a = await agent(collector);
    expect(await connect(a.ctx)).toBe('hello waypoint');
    await until(() => a.exporter.stats().exported === 1);
    expect(await scrape(a.admin)).toEqual({ records: { exported: 1, queue_full: 0, export_failed: 0 }, queued: 0 });
    await a.exporter.shutdown(); // sends anything still queued: a second record would be at the receiver now
    expect(receiver.refused).toEqual([]);
    expect(receiver.logs).toHaveLength(1);
    expect(a.accessLines()).toHaveLength(1);
    const line = a.accessLines()[0]!;
    const r = receiver.logs[0]!;
    expect(r.body).toBe(line.msg);
    expect(r.body).toBe('connection complete');
    expect([r.severityNumber, r.severityText]).toEqual([9, 'INFO']);
    // Every field of the line, and only those: the line is the record.
    const { level: _l, time: _t, pid: _p, hostname: _h, msg: _m, ...fields } = line;
    expect(r.attributes).toEqual(fields);
    expect(r.attributes).toMatchObject({
      direction: 'outbound', pod: 'shop/client', 'src.workload': 'client', 'src.namespace': 'shop', 'src.identity': 'spiffe://cluster.local/ns/shop/sa/client',
      'dst.addr': '10.244.2.70:9000', 'dst.hbone_addr': `127.0.0.1:${waypoint.port}`, 'dst.identity': 'spiffe://cluster.local/ns/shop/sa/waypoint',
      protocol: 'HBONE', bytes_sent: 'hello waypoint'.length, bytes_recv: 'hello waypoint'.length,
    });
    expect(r.attributes['src.addr']).toMatch(/^10\.244\.1\.5:\d+$/); // the pod's address, as the line
    expect(typeof r.attributes.duration_ms).toBe('number');
    expect(r.resource).toMatchObject({ 'service.name': 'weft-agent', 'k8s.node.name': 'node-a', 'k8s.pod.name': 'weft-agent-x1', 'k8s.namespace.name': 'istio-system' });
  }, 20_000);

  it('a refused connection is a WARN record with the error and response flag', async () => {
    const a = await agent(collector, { resolvable: false });
    expect(await connect(a.ctx)).toMatch(/^error: /);
    await until(() => a.exporter.stats().exported === 1);
    expect(receiver.logs).toHaveLength(1);
    expect([receiver.logs[0]!.severityNumber, receiver.logs[0]!.severityText, receiver.logs[0]!.body]).toEqual([13, 'WARN', 'connection failed']);
    expect(receiver.logs[0]!.attributes).toMatchObject({ error: 'waypoint shop/waypoint.shop.svc.cluster.local:15008 is not in the mesh state', response_flags: 'NR' });
  });

  it('collector answering 503: every connection carried as before, the records dropped and counted on /metrics', async () => {
    receiver.failWith = 503;
    const a = await agent(collector, { timeout: 500 });
    for (let i = 0; i < 5; i++) expect(await connect(a.ctx, `payload ${i}`)).toBe(`payload ${i}`);
    expect(a.accessLines()).toHaveLength(5); // the line is written whatever the collector does
    await until(async () => (await scrape(a.admin)).records.export_failed === 5);
    expect(await scrape(a.admin)).toEqual({ records: { exported: 0, queue_full: 0, export_failed: 5 }, queued: 0 });
    expect(receiver.logs).toHaveLength(0);
    // Said in the agent's log, at most every 30 s however many batches fail.
    const said = a.lines.filter((l) => l.msg === 'OTLP access-log export failed; records dropped');
    expect(said).toHaveLength(1);
    expect(said[0]).toMatchObject({ level: 40, endpoint: collector });
  }, 20_000);

  it('collector down or hanging: connections unaffected, at most the cap held, the rest counted as queue_full', async () => {
    // A collector that accepts and never answers: the first batch holds its records until the deadline.
    const sockets: Socket[] = [];
    const hang = createTcpServer((s) => void sockets.push(s.on('error', () => {})));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const cap = 3;
    const a = await agent(`http://127.0.0.1:${(hang.address() as AddressInfo).port}/v1/logs`, { timeout: 10_000, maxQueue: cap });
    try {
      let maxHeld = 0;
      for (let i = 0; i < 12; i++) {
        expect(await connect(a.ctx, `payload ${i}`)).toBe(`payload ${i}`);
        maxHeld = Math.max(maxHeld, a.exporter.stats().held);
      }
      expect(a.accessLines()).toHaveLength(12);
      expect(maxHeld).toBe(cap);
      const m = await scrape(a.admin);
      expect(m).toEqual({ records: { exported: 0, queue_full: 12 - cap, export_failed: 0 }, queued: cap });
    } finally {
      await a.exporter.shutdown(200); // gives up at its deadline though the collector never answers
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hang.close(() => r()));
    }
    // A port nobody listens on: each batch fails by its deadline, nothing stays held.
    const b = await agent('http://127.0.0.1:9/v1/logs', { timeout: 300, maxQueue: cap });
    for (let i = 0; i < 6; i++) expect(await connect(b.ctx, `again ${i}`)).toBe(`again ${i}`);
    await until(() => b.exporter.stats().held === 0);
    const s = b.exporter.stats();
    expect(s.exported).toBe(0);
    expect(s.dropped.queue_full + s.dropped.export_failed).toBe(6);
    expect(s.dropped.export_failed).toBeGreaterThan(0);
  }, 30_000);

  it('configuration: a bad header list or endpoint fails the start; an endpoint without /v1/logs is used as given, with a warning', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
    await expect(startAccessLogExport({ node: 'n', otlpLogsEndpoint: collector, otlpLogsHeaders: 'authorization' }, log, {})).rejects.toThrow(/name=value/);
    await expect(startAccessLogExport({ node: 'n', otlpLogsEndpoint: 'collector:4318' }, log, {})).rejects.toThrow();
    const bare = collector.replace(/\/v1\/logs$/, '');
    const e = await startAccessLogExport({ node: 'n', otlpLogsEndpoint: bare, otlpLogsHeaders: 'x-tenant=acme' }, log, {});
    agents.push({ exporter: e, admin: [] });
    expect(lines.find((l) => l.level === 40)).toMatchObject({ endpoint: bare, msg: expect.stringContaining('/v1/logs') });
    expect(lines.find((l) => l.level === 30)).toMatchObject({ headers: ['x-tenant'] }); // names only: values may be tokens
    expect(JSON.stringify(lines)).not.toContain('acme');
  });
});
