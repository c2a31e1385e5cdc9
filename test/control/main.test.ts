// `weft control --config-dir` as a process: standalone (proxyless gRPC users) it starts with no
// node credentials at all, serves plaintext xDS on 15010 and refuses every caller of the TLS port
// and the CA (fail closed); with --workload-tokens the CA also serves workloads asking for their
// own identity (the lab's waypoints) and Envoy config over xDS on the TLS port, never the workload
// API; its debug endpoints answer loopback clients only.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { adsService } from '../../src/api/protos.ts';
import { CAClient } from '../../src/identity/ca-client.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { DeltaXdsClient } from '../../src/agent/xds/delta-client.ts';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/api/codec.ts';
import { decode, ENVOY_TYPES, TYPE_CLUSTER, TYPE_LISTENER } from '../../src/control/xds/envoy/messages.ts';
import { XdsClient, type XdsUpdate } from '../../src/xds/client.ts';
import { until as waitUntil } from '../util/until.ts';
import { freePort } from '../util/ports.ts';
import { stopProcess as stop } from '../util/process.ts';

const BIN = new URL('../../bin/weft.js', import.meta.url).pathname;
const SERVER_NAME = 'weft-control.istio-system.svc';
const WEB_1 = 'Kubernetes//Pod/shop/web-1';
const until = (what: string, fn: () => boolean, timeoutMs = 30_000) => waitUntil(what, fn, timeoutMs, 20);

const CONFIG = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } },
    spec: { nodeName: 'node-1', serviceAccountName: 'web', containers: [{ name: 'app', image: 'web', ports: [{ containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: '10.244.1.5', conditions: [{ type: 'Ready', status: 'True' }] },
  },
];

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Starts `argv` (weft control ...) and waits for it to be ready; its output is in `out()`. */
async function startControl(argv: string[]): Promise<{ cp: ChildProcess; out: () => string }> {
  const cp = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  cp.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  cp.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  cleanups.push(() => stop(cp));
  await until('control plane ready', () => {
    if (cp.exitCode !== null) throw new Error(`weft control exited with ${cp.exitCode}:\n${out}`);
    return out.includes('control plane ready');
  });
  return { cp, out: () => out };
}

/** The status a Delta ADS stream on the TLS port ends with for this bearer token ('' for none); bounded. */
async function xdsStatus(port: number, root: string, token: string): Promise<grpc.status | 'no status in 10 s'> {
  const Ads = adsService();
  const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(root)), { 'grpc.ssl_target_name_override': SERVER_NAME, 'grpc.default_authority': SERVER_NAME }) as unknown as grpc.Client & {
    DeltaAggregatedResources: (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>;
  };
  try {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    const call = client.DeltaAggregatedResources(md);
    call.on('error', () => {});
    let timer: NodeJS.Timeout | undefined;
    const status = await Promise.race([
      new Promise<grpc.status>((r) => call.on('status', (s: grpc.StatusObject) => r(s.code))),
      new Promise<'no status in 10 s'>((r) => (timer = setTimeout(() => r('no status in 10 s'), 10_000))),
    ]);
    clearTimeout(timer);
    call.cancel();
    return status;
  } finally {
    client.close();
  }
}

function configDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-control-main-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'config'));
  writeFileSync(join(dir, 'config', 'shop.yaml'), CONFIG.map((o) => stringify(o)).join('---\n'));
  return dir;
}

describe('weft control --config-dir', () => {
  it('starts without --node-tokens: 15010 serves the mesh, the TLS port and the CA refuse everyone', async () => {
    const dir = configDir();
    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const rootOut = join(dir, 'root-cert.pem');
    await startControl([
      process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--ca-dir', join(dir, 'ca'), '--root-cert-out', rootOut,
      '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1',
      '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
    ]);
    const root = readFileSync(rootOut, 'utf8');

    // A client with no credential on the plaintext port: what proxyless gRPC users run.
    const xds = new DeltaXdsClient({ address: `127.0.0.1:${plain}`, nodeId: 'proxyless', log: pino({ level: 'silent' }) });
    cleanups.push(() => xds.close());
    xds.start();
    await until('workload over plaintext xDS', () => xds.synced && xds.state.workloads.has(WEB_1));

    // The TLS port: whatever token a caller presents, no node credential exists.
    for (const token of ['anything', '']) expect(await xdsStatus(tls, root, token), `token ${JSON.stringify(token)}`).toBe(grpc.status.UNAUTHENTICATED);
    const ca = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, nodeToken: 'anything' });
    cleanups.push(() => ca.close());
    const { csrPem } = await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' });
    await expect(ca.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/web', 3600)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    // Nor is any workload credential: without --workload-tokens a workload asking for itself is refused too.
    const own = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, workloadToken: 'anything' });
    cleanups.push(() => own.close());
    await expect(own.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/web', 3600)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it('--workload-tokens: a workload gets its own identity with its own token, re-read when the file changes; counted in metrics', async () => {
    const dir = configDir();
    writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
    writeFileSync(join(dir, 'workloads.json'), JSON.stringify({ 'waypoint-token': 'shop/waypoint' }));
    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const rootOut = join(dir, 'root-cert.pem');
    await startControl([
      process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'), '--workload-tokens', join(dir, 'workloads.json'),
      '--root-cert-out', rootOut, '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1',
      '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
    ]);
    const root = readFileSync(rootOut, 'utf8');
    let token = 'waypoint-token';
    const own = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, workloadToken: () => token });
    cleanups.push(() => own.close());
    const waypoint = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'waypoint' };
    const { csrPem } = await createKeyAndCsr(waypoint);
    const chain = await own.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/waypoint', 3600);
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/waypoint');
    // Another identity's CSR with this token; the node's token without naming an identity.
    const web = (await createKeyAndCsr({ ...waypoint, serviceAccount: 'web' })).csrPem;
    await expect(own.createCertificate(web, 'spiffe://cluster.local/ns/shop/sa/web', 3600)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    token = 'node-1-token';
    await expect(own.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/waypoint', 3600)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    // Revoked in the file: refused at once, no restart.
    token = 'waypoint-token';
    writeFileSync(join(dir, 'workloads.json'), JSON.stringify({ 'rotated-token': 'shop/waypoint' }));
    await expect(own.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/waypoint', 3600)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    token = 'rotated-token';
    expect(await own.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/waypoint', 3600)).toHaveLength(2);
    const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    expect(text).toContain('weft_control_ca_requests_total{result="issued"} 2');
    expect(text).toContain('weft_control_ca_requests_total{result="PERMISSION_DENIED"} 1');
    expect(text).toContain('weft_control_ca_requests_total{result="INVALID_ARGUMENT"} 1');
    expect(text).toContain('weft_control_ca_requests_total{result="UNAUTHENTICATED"} 1');
  });

  it('ends a refused xDS stream with UNAUTHENTICATED, so the client retries instead of waiting forever', async () => {
    const dir = configDir();
    writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const rootOut = join(dir, 'root-cert.pem');
    await startControl([
      process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'), '--root-cert-out', rootOut,
      '--server-name', SERVER_NAME, '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
    ]);
    expect(await xdsStatus(tls, readFileSync(rootOut, 'utf8'), 'expired-or-forged')).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('--no-plain-address serves no plaintext xDS', async () => {
    const dir = configDir();
    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const { out } = await startControl([
      process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--no-plain-address',
      '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
    ]);
    expect(out()).toContain('"plain":false');
    const refused = await new Promise<boolean>((resolve) => {
      const s = createConnection(plain, '127.0.0.1', () => (s.destroy(), resolve(false)));
      s.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  // The metrics port listens on every address (Prometheus, kubelet probes); /debug/ must still
  // answer loopback clients only. A network namespace of our own gives the process an address
  // that is not loopback to be reached on.
  it.skipIf(process.getuid?.() !== 0)('answers /debug/ on loopback only; /metrics and /ready from anywhere', async () => {
    const dir = configDir();
    const ns = `weft-ctl-dbg-${randomBytes(3).toString('hex')}`;
    const ip = '10.250.77.1';
    const sh = (...a: string[]) => {
      const r = spawnSync(a[0]!, a.slice(1), { encoding: 'utf8', timeout: 15_000 });
      if (r.status !== 0) throw new Error(`${a.join(' ')}: ${r.status} ${r.stderr}`);
      return r.stdout;
    };
    sh('ip', 'netns', 'add', ns);
    cleanups.push(() => spawnSync('ip', ['netns', 'del', ns]));
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    sh('ip', '-n', ns, 'addr', 'add', `${ip}/32`, 'dev', 'lo');
    writeFileSync(join(dir, 'tokens.json'), '{}');
    await startControl([
      'ip', 'netns', 'exec', ns, process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'),
      '--plain-address', '127.0.0.1:15010', '--tls-address', '127.0.0.1:15012', '--metrics-address', '0.0.0.0:15014',
    ]);
    const get = (host: string, path: string) => {
      const r = spawnSync('ip', ['netns', 'exec', ns, 'curl', '-s', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${host}:15014${path}`], { encoding: 'utf8', timeout: 15_000 });
      return r.stdout;
    };
    await until('ready', () => get('127.0.0.1', '/ready') === '200');
    expect(get('127.0.0.1', '/debug/config_dump')).toBe('200');
    // From the namespace's own non-loopback address: what any pod reaching the pod IP looks like.
    expect(get(ip, '/debug/config_dump')).toBe('403');
    expect(get(ip, '/debug')).toBe('403');
    expect(get(ip, '/metrics')).toBe('200');
    expect(get(ip, '/ready')).toBe('200');
  });
});

// A waypoint on the TLS port with its own service-account token (--workload-tokens): Envoy config
// over Delta ADS (as a waypoint subscribes to it) and SotW ADS (proxyless gRPC); the workload API (every
// workload, the node agents' view) is refused PERMISSION_DENIED on either variant, naming the
// type, and counted. An unknown token is refused UNAUTHENTICATED; node tokens see everything as before.
describe('weft control: xDS for workload credentials', () => {
  it('serves a workload token LDS/CDS over SotW and Delta, refuses it the workload API on both, and leaves node tokens unchanged', async () => {
    const dir = configDir();
    writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
    writeFileSync(join(dir, 'workloads.json'), JSON.stringify({ 'waypoint-token': 'shop/waypoint' }));
    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const rootOut = join(dir, 'root-cert.pem');
    const { out } = await startControl([
      process.execPath, BIN, 'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'), '--workload-tokens', join(dir, 'workloads.json'),
      '--root-cert-out', rootOut, '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1',
      '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
    ]);
    const root = readFileSync(rootOut, 'utf8');
    const silent = pino({ level: 'silent' });
    /** An XdsClient on the TLS port; every response it is given is kept by type. */
    const client = (token: string, mode: 'delta' | 'sotw', types: string[]) => {
      const got = new Map<string, string[]>();
      const c = new XdsClient({
        address: `127.0.0.1:${tls}`, nodeId: 'waypoint-0', mode, log: silent, token, tls: { rootPem: root, serverName: SERVER_NAME },
        watches: types.map((typeUrl) => ({ typeUrl, nameOf: (body: Uint8Array) => (ENVOY_TYPES.includes(typeUrl as never) ? String(decode(typeUrl, body).name ?? '') : 'workload-api'), apply: (u: XdsUpdate) => void got.set(typeUrl, [...(got.get(typeUrl) ?? []), ...u.resources.map((r) => r.name)]) })),
      });
      cleanups.push(() => c.close());
      c.start();
      return { c, got };
    };

    // The waypoint's token, SotW, LDS and CDS as wildcards: the mesh's Envoy config for web.
    const wp = client('waypoint-token', 'sotw', [TYPE_CLUSTER, TYPE_LISTENER]);
    await until('waypoint synced over SotW', () => wp.c.synced);
    expect(wp.got.get(TYPE_CLUSTER)!.some((n) => n.includes('web.shop.svc.cluster.local'))).toBe(true);
    expect(wp.got.get(TYPE_LISTENER)!.some((n) => n.includes('web.shop.svc.cluster.local'))).toBe(true);
    expect(wp.c.lastError).toBeUndefined();
    // The same over Delta, as the waypoint takes it.
    const wpDelta = client('waypoint-token', 'delta', [TYPE_CLUSTER, TYPE_LISTENER]);
    await until('waypoint synced over Delta', () => wpDelta.c.synced);
    expect(wpDelta.got.get(TYPE_CLUSTER)!.some((n) => n.includes('web.shop.svc.cluster.local'))).toBe(true);
    expect(wpDelta.got.get(TYPE_LISTENER)!.some((n) => n.includes('web.shop.svc.cluster.local'))).toBe(true);
    expect(wpDelta.c.lastError).toBeUndefined();

    // The same token asking for the workload API: over Delta, and over SotW after a type it may
    // have (the stream ends at the forbidden request; nothing of that type is ever applied).
    const delta = client('waypoint-token', 'delta', [TYPE_ADDRESS]);
    await until('Delta workload API refused', () => delta.c.lastError !== undefined);
    expect(delta.c.lastError).toMatch(/^PERMISSION_DENIED: workload shop\/waypoint may not subscribe to type type.googleapis.com\/istio.workload.Address: .*Envoy config/);
    const deltaAfter = client('waypoint-token', 'delta', [TYPE_CLUSTER, TYPE_AUTHORIZATION]);
    await until('Delta policies refused after CDS', () => deltaAfter.c.lastError !== undefined);
    expect(deltaAfter.c.lastError).toContain(`PERMISSION_DENIED: workload shop/waypoint may not subscribe to type ${TYPE_AUTHORIZATION}`);
    const sotw = client('waypoint-token', 'sotw', [TYPE_CLUSTER, TYPE_AUTHORIZATION]);
    await until('SotW workload API refused', () => sotw.c.lastError !== undefined);
    expect(sotw.c.lastError).toContain(`PERMISSION_DENIED: workload shop/waypoint may not subscribe to type ${TYPE_AUTHORIZATION}`);
    expect(delta.got.size + (deltaAfter.got.has(TYPE_AUTHORIZATION) ? 1 : 0) + (sotw.got.has(TYPE_AUTHORIZATION) ? 1 : 0)).toBe(0);
    expect(delta.c.synced || deltaAfter.c.synced || sotw.c.synced).toBe(false);

    // Unknown and empty tokens: refused before any request, on both variants.
    const forged = client('forged-token', 'sotw', [TYPE_CLUSTER]);
    const forgedDelta = client('forged-token', 'delta', [TYPE_ADDRESS]);
    await until('forged tokens refused', () => forged.c.lastError !== undefined && forgedDelta.c.lastError !== undefined);
    expect(forged.c.lastError).toMatch(/^UNAUTHENTICATED: node or workload credential required/);
    expect(forgedDelta.c.lastError).toMatch(/^UNAUTHENTICATED/);
    expect(await xdsStatus(tls, root, '')).toBe(grpc.status.UNAUTHENTICATED);
    expect(forged.got.size + forgedDelta.got.size).toBe(0);

    // The node agent's token: the workload API over Delta and Envoy config over SotW, as before.
    const agent = client('node-1-token', 'delta', [TYPE_ADDRESS, TYPE_AUTHORIZATION]);
    await until('node synced over Delta', () => agent.c.synced);
    expect(agent.got.get(TYPE_ADDRESS)!.length).toBeGreaterThan(0);
    const agentSotw = client('node-1-token', 'sotw', [TYPE_CLUSTER, TYPE_ADDRESS]);
    await until('node synced over SotW', () => agentSotw.c.synced);
    expect(agentSotw.c.lastError).toBeUndefined();

    const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    expect(Number(/weft_control_xds_refused_total\{reason="type_not_allowed"\} (\d+)/.exec(text)?.[1])).toBeGreaterThanOrEqual(3);
    expect(Number(/weft_control_xds_refused_total\{reason="unauthenticated"\} (\d+)/.exec(text)?.[1])).toBeGreaterThanOrEqual(3);
    expect(out()).toContain('xds stream refused: workload shop/waypoint may not subscribe');
  });
});
