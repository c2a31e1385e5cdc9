// `weft waypoint run` as the waypoint Deployment runs it, against a real `weft control`: the
// certificate from the mesh CA under the waypoint's own service-account token, Envoy config and the
// workload API over xDS on the TLS port, readiness once both have synced. Fails closed: a token the
// CA does not know gives no certificate and no listener; the token of a workload that is not a
// waypoint gets a certificate but never the workload API, so that waypoint never becomes ready.
// SIGTERM drains: not ready at once, a second SIGTERM ignored, the deadline bounds it, exit 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { sleep } from '../../src/util/sleep.ts';
import { freePort } from '../util/ports.ts';
import { stopProcess as stop } from '../util/process.ts';
import { until as waitUntil } from '../util/until.ts';

const BIN = new URL('../../bin/weft.js', import.meta.url).pathname;
const SERVER_NAME = 'weft-control.istio-system.svc';
const until = (what: string, fn: () => boolean, timeoutMs = 30_000) => waitUntil(what, fn, timeoutMs, 50);

const CONFIG = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' } } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } },
    spec: { nodeName: 'node-1', serviceAccountName: 'web', containers: [{ name: 'app', image: 'web', ports: [{ containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: '10.244.1.5', conditions: [{ type: 'Ready', status: 'True' }] },
  },
  {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: 'waypoint', namespace: 'shop', labels: { 'istio.io/waypoint-for': 'service' } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  },
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'waypoint', namespace: 'shop', labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } },
    spec: { clusterIP: '10.96.0.20', selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, ports: [{ name: 'mesh', port: 15008, appProtocol: 'hbone' }] },
  },
];

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function start(args: string[], env?: Record<string, string>): { cp: ChildProcess; out: () => string } {
  const cp = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(env && { env: { ...process.env, ...env } }) });
  let out = '';
  cp.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  cp.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  cleanups.push(() => stop(cp));
  return { cp, out: () => out };
}

/** The status of GET url, or 0 when nothing answers (bounded). */
const status = (url: string) =>
  new Promise<number>((resolve) => {
    const req = request(url, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });

function controlDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-waypoint-process-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function controlPlane(dir = controlDir(), tlsPort?: number): Promise<{ dir: string; tls: number; cp: ChildProcess }> {
  mkdirSync(join(dir, 'config'), { recursive: true });
  writeFileSync(join(dir, 'config', 'shop.yaml'), CONFIG.map((o) => stringify(o)).join('---\n'));
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
  writeFileSync(join(dir, 'workloads.json'), JSON.stringify({ 'waypoint-token': 'shop/waypoint', 'web-token': 'shop/web' }));
  for (const [f, t] of [['waypoint.token', 'waypoint-token'], ['web.token', 'web-token'], ['forged.token', 'forged-token']]) writeFileSync(join(dir, f!), `${t}\n`);
  const [plain, tls, metrics] = [await freePort(), tlsPort ?? (await freePort()), await freePort()];
  const control = start([
    'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'), '--workload-tokens', join(dir, 'workloads.json'),
    '--root-cert-out', join(dir, 'root-cert.pem'), '--ca-dir', join(dir, 'ca'), '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1',
    '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
  ]);
  await until('control plane ready', () => {
    if (control.cp.exitCode !== null) throw new Error(`weft control exited with ${control.cp.exitCode}:\n${control.out()}`);
    return control.out().includes('control plane ready');
  });
  return { dir, tls, cp: control.cp };
}

async function waypoint(dir: string, tls: number, token: string, sa: string, extra: string[] = [], env?: Record<string, string>) {
  const [mesh, statusPort, metrics] = [await freePort(), await freePort(), await freePort()];
  const p = start([
    'waypoint', 'run', '--control-address', `127.0.0.1:${tls}`, '--control-server-name', SERVER_NAME, '--root-cert', join(dir, 'root-cert.pem'),
    '--token-file', join(dir, token), '--namespace', 'shop', '--service-account', sa,
    '--mesh-address', `127.0.0.1:${mesh}`, '--status-address', `127.0.0.1:${statusPort}`, '--metrics-address', `127.0.0.1:${metrics}`, ...extra,
  ], env);
  return { ...p, mesh, ready: () => status(`http://127.0.0.1:${statusPort}/healthz/ready`), metrics: () => status(`http://127.0.0.1:${metrics}/metrics`) };
}

describe('weft waypoint run', () => {
  it("gets its certificate with its own token, syncs, and reports ready", async () => {
    const { dir, tls } = await controlPlane();
    const w = await waypoint(dir, tls, 'waypoint.token', 'waypoint');
    let ready = 0;
    await until('waypoint ready', () => {
      if (w.cp.exitCode !== null) throw new Error(`weft waypoint run exited with ${w.cp.exitCode}:\n${w.out()}`);
      void w.ready().then((s) => (ready = s));
      return ready === 200;
    });
    expect(await w.metrics()).toBe(200);
    expect(w.out()).toContain('spiffe://cluster.local/ns/shop/sa/waypoint');
    expect(readFileSync(join(dir, 'root-cert.pem'), 'utf8')).toContain('BEGIN CERTIFICATE');
  }, 60_000);

  it('waits for a control plane that is not up yet (its CA unreachable) and becomes ready once it is', async () => {
    // As when the waypoint's pod starts while the control plane rolls: not a reason to exit. The
    // first control plane leaves the root and the CA (--ca-dir) for the second, then stops.
    const first = await controlPlane();
    const { dir, tls } = first;
    await stop(first.cp);
    const w = await waypoint(dir, tls, 'waypoint.token', 'waypoint');
    await until('first fetch failed', () => {
      if (w.cp.exitCode !== null) throw new Error(`weft waypoint run exited with ${w.cp.exitCode}:\n${w.out()}`);
      return w.out().split('\n').filter((l) => l.includes('workload certificate fetch failed')).length >= 2;
    });
    expect(w.cp.exitCode).toBeNull();
    expect(w.out()).not.toContain('waypoint started'); // nothing listens without a certificate
    await controlPlane(dir, tls);
    let ready = 0;
    await until('waypoint ready', () => {
      if (w.cp.exitCode !== null) throw new Error(`weft waypoint run exited with ${w.cp.exitCode}:\n${w.out()}`);
      void w.ready().then((s) => (ready = s));
      return ready === 200;
    });
  }, 60_000);

  it('fails closed: an unknown token gets no certificate and the process exits; a non-waypoint workload never gets the workload API', async () => {
    const { dir, tls } = await controlPlane();
    const forged = await waypoint(dir, tls, 'forged.token', 'waypoint');
    await until('forged waypoint exits', () => forged.cp.exitCode !== null);
    expect(forged.cp.exitCode).not.toBe(0);
    expect(forged.out()).toMatch(/UNAUTHENTICATED/);

    // shop/web is a workload the CA knows, but no waypoint runs as it: Envoy config yes, the
    // workload API no, so it holds a certificate and stays unready.
    const web = await waypoint(dir, tls, 'web.token', 'web');
    await until('refused the workload API', () => /PERMISSION_DENIED/.test(web.out()));
    await sleep(1000);
    expect(await web.ready()).toBe(503);
    expect(web.cp.exitCode).toBeNull();
  }, 60_000);

  it('drains on SIGTERM: not ready at once, a second SIGTERM ignored, what is left closed at the deadline, then exit 0', async () => {
    const { dir, tls } = await controlPlane();
    const w = await waypoint(dir, tls, 'waypoint.token', 'waypoint', [], { WEFT_DRAIN_DEADLINE: '3' });
    let ready = 0;
    await until('waypoint ready', () => {
      if (w.cp.exitCode !== null) throw new Error(`weft waypoint run exited with ${w.cp.exitCode}:\n${w.out()}`);
      void w.ready().then((s) => (ready = s));
      return ready === 200;
    });
    // A connection that never starts its TLS handshake holds the HBONE listener open: the drain
    // waits for it until the deadline (3 s, from WEFT_DRAIN_DEADLINE) rather than its handshake timeout (5 s).
    const held = connect(w.mesh, '127.0.0.1');
    held.on('error', () => {});
    cleanups.push(() => held.destroy());
    await new Promise<void>((resolve) => held.once('connect', resolve));
    const exited = new Promise<number | null>((resolve) => w.cp.once('exit', (code) => resolve(code)));
    const start = Date.now();
    w.cp.kill('SIGTERM');
    await until('draining logged', () => w.out().includes('waypoint draining'));
    expect(await w.ready()).toBe(503);
    expect(await w.metrics()).toBe(200); // still scraped while it drains
    w.cp.kill('SIGTERM');
    await until('second SIGTERM logged', () => w.out().includes('waypoint already draining'));
    expect(w.cp.exitCode).toBeNull();
    expect(await exited).toBe(0);
    expect(Date.now() - start).toBeGreaterThanOrEqual(2500);
    const lines = w.out().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.find((l) => l.msg === 'waypoint draining')).toMatchObject({ signal: 'SIGTERM', deadlineSeconds: 3 });
    expect(lines.find((l) => l.msg === 'waypoint drained')).toMatchObject({ closedAtDeadline: expect.any(Object) });
  }, 60_000);

  it('a second SIGINT during the drain closes what is left now, and the process exits', async () => {
    const { dir, tls } = await controlPlane();
    const w = await waypoint(dir, tls, 'waypoint.token', 'waypoint', ['--drain-deadline', '30']);
    await until('waypoint listening', () => w.out().includes('waypoint started'));
    const held = connect(w.mesh, '127.0.0.1');
    held.on('error', () => {});
    cleanups.push(() => held.destroy());
    await new Promise<void>((resolve) => held.once('connect', resolve));
    const exited = new Promise<number | null>((resolve) => w.cp.once('exit', (code) => resolve(code)));
    w.cp.kill('SIGINT');
    await until('draining logged', () => w.out().includes('waypoint draining'));
    await sleep(300);
    expect(w.cp.exitCode).toBeNull();
    const start = Date.now();
    w.cp.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(Date.now() - start).toBeLessThan(15_000); // not the 30 s deadline
    expect(w.out()).toContain('waypoint drain cut short');
    expect(w.out()).toContain('waypoint drained');
  }, 60_000);

  it('refuses a drain deadline that is not a number of seconds, naming the flag', async () => {
    // Checked before anything else: no control plane needed.
    const w = await waypoint(tmpdir(), 1, 'waypoint.token', 'waypoint', ['--drain-deadline', '30s']);
    await until('bad deadline exits', () => w.cp.exitCode !== null);
    expect(w.cp.exitCode).not.toBe(0);
    expect(w.out()).toContain('--drain-deadline: "30s" is not a number of seconds');
  }, 60_000);
});
