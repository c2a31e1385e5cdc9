// The waypoint process's memory, alone on this machine: a real `weft control` (config directory,
// CA, TLS xDS), `weft waypoint run` as its Deployment runs it (certificate from the CA under its
// token), a pod (an HTTP server behind an HBONE server on podIP:15008, podIP a 127/8 address) and a
// client sending HTTP/1.1 POSTs through HBONE CONNECTs to the Service's address, as a source agent
// would. Prints RSS (and its anonymous part) and the heap's figures (process.memoryUsage, read by a
// preloaded module on SIGUSR2) idle after the first configuration, then during and after a constant
// load. Not part of the bench (no figures recorded); for finding where the waypoint's memory goes.
//   node --import tsx bench/tools/waypoint-rss.ts [RATE=300] [SECONDS=20] [TUNNELS=8] [-- NODE_FLAGS...]
// WAYPOINT_NODE_OPTIONS: node flags for the waypoint process (e.g. --max-semi-space-size=1; with
// --expose-gc each reading also collects garbage, after reading RSS, and shows the live heap).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import http, { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CertManager } from '../../src/identity/index.ts';
import { createHboneServer } from '../../src/hbone/node/server.ts';
import { HbonePool } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { buffersOnly } from '../../src/waypoint/buffers-only.ts';
import { connectTo } from '../../test/hbone/harness.ts';
import { freePort } from '../../test/util/ports.ts';

const [rateS, secsS, tunnelsS] = process.argv.slice(2);
const RATE = Number(rateS ?? 300);
const SECONDS = Number(secsS ?? 20);
const TUNNELS = Number(tunnelsS ?? 8);
const ROOT = new URL('../..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/weft.js');
const SERVER_NAME = 'weft-control.istio-system.svc';
const POD_IP = `127.0.${10 + (process.pid % 200)}.${2 + (process.pid % 250)}`;
const VIP = '10.96.0.10';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 60_000) {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}

const children: ChildProcess[] = [];
function start(args: string[], nodeFlags: string[] = []): { cp: ChildProcess; out: () => string } {
  const cp = spawn(process.execPath, [...nodeFlags, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(nodeFlags.length && process.env.WAYPOINT_GLIBC_TUNABLES ? { GLIBC_TUNABLES: process.env.WAYPOINT_GLIBC_TUNABLES } : {}) } });
  let out = '';
  cp.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  cp.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  children.push(cp);
  return { cp, out: () => out };
}

// The processes run from the bundle, as in the lab and the bench: with sources edited since it was
// built, bin/weft.js would run them through tsx's loader instead (~15 MB more RSS).
execFileSync(process.execPath, [join(ROOT, 'scripts/build-js.mjs')], { stdio: 'ignore' });

const dir = mkdtempSync(join(tmpdir(), 'weft-waypoint-rss-'));
const CONFIG = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' } } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: VIP, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web' } },
    spec: { nodeName: 'node-1', serviceAccountName: 'web', containers: [{ name: 'app', image: 'web', ports: [{ containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: POD_IP, conditions: [{ type: 'Ready', status: 'True' }] },
  },
  {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop', labels: { 'istio.io/waypoint-for': 'service' } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  },
  {
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'waypoint', namespace: 'shop', labels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } },
    spec: { clusterIP: '10.96.0.20', selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' }, ports: [{ name: 'mesh', port: 15008, appProtocol: 'hbone' }] },
  },
];

interface Reading { rss: number; anon: number; file: number; live?: number; heapUsed?: number; heapTotal?: number; external?: number; arrayBuffers?: number }
const MEM_FILE = join(dir, 'mem.json');
const PRELOAD = join(dir, 'mem.mjs');
writeFileSync(PRELOAD, `import { writeFileSync } from 'node:fs';
import { writeHeapSnapshot } from 'node:v8';
process.on('SIGPWR', () => writeHeapSnapshot(process.env.WAYPOINT_SNAPSHOT));
process.on('SIGUSR2', () => {
  const m = process.memoryUsage();
  globalThis.gc?.();
  writeFileSync(${JSON.stringify(MEM_FILE)}, JSON.stringify({ ...m, live: globalThis.gc ? process.memoryUsage().heapUsed : undefined }));
});\n`);

async function reading(pid: number): Promise<Reading> {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (f: string) => Number(new RegExp(`${f}:\\s+(\\d+)`).exec(st)?.[1] ?? 0) / 1024;
  rmSync(MEM_FILE, { force: true });
  process.kill(pid, 'SIGUSR2');
  await until('memoryUsage', () => existsSync(MEM_FILE), 5000).catch(() => {});
  let m: Partial<NodeJS.MemoryUsage & { live: number }> = {};
  try { m = JSON.parse(readFileSync(MEM_FILE, 'utf8')) as NodeJS.MemoryUsage & { live: number }; } catch { /* written meanwhile */ }
  const mb = (n?: number) => (n === undefined ? undefined : n / 1048576);
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), live: mb(m.live), heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers) };
}
const show = (what: string, r: Reading) =>
  console.log(`${what.padEnd(14)} rss ${r.rss.toFixed(1)} MB (anon ${r.anon.toFixed(1)}, file ${r.file.toFixed(1)})  heap ${r.heapUsed?.toFixed(1)}/${r.heapTotal?.toFixed(1)}  external ${r.external?.toFixed(1)}  arrayBuffers ${r.arrayBuffers?.toFixed(1)}${r.live === undefined ? '' : `  live heap ${r.live.toFixed(1)}`}`);

try {
  mkdirSync(join(dir, 'config'));
  writeFileSync(join(dir, 'config', 'shop.yaml'), CONFIG.map((o) => stringify(o)).join('---\n'));
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
  writeFileSync(join(dir, 'workloads.json'), JSON.stringify({ 'waypoint-token': 'shop/waypoint', 'web-token': 'shop/web' }));
  writeFileSync(join(dir, 'waypoint.token'), 'waypoint-token\n');
  const [plain, tls, cmetrics, mesh, statusPort, metrics] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const control = start([
    'control', '--config-dir', join(dir, 'config'), '--node-tokens', join(dir, 'tokens.json'), '--workload-tokens', join(dir, 'workloads.json'),
    '--root-cert-out', join(dir, 'root-cert.pem'), '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1',
    '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${cmetrics}`,
  ]);
  await until('control plane ready', () => {
    if (control.cp.exitCode !== null) throw new Error(`weft control exited:\n${control.out()}`);
    return control.out().includes('control plane ready');
  });

  // The pod's certificate (shop/web) from the CA; the client uses it too (it is a workload of the mesh).
  const certs = new CertManager({ address: `127.0.0.1:${tls}`, rootPem: () => readFileSync(join(dir, 'root-cert.pem'), 'utf8'), serverName: SERVER_NAME, workloadToken: () => 'web-token', identity: { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' } });
  const cert = await certs.get();
  certs.close();
  const creds: Credentials = { certChain: cert.certChainPem, key: cert.keyPem, root: cert.rootPem };

  const app = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"pod":"web-1"}'));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as { port: number }).port;
  const hbone = createHboneServer({ credentials: () => creds, trustDomain: 'cluster.local', onConnect: async () => ({ status: 200, upstream: await connectTo(appPort) }) });
  await hbone.listen({ port: 15008, host: POD_IP });

  const flags = (process.env.WAYPOINT_NODE_OPTIONS ?? '').split(/\s+/).filter(Boolean);
  const wp = start([
    'waypoint', 'run', '--control-address', `127.0.0.1:${tls}`, '--control-server-name', SERVER_NAME, '--root-cert', join(dir, 'root-cert.pem'),
    '--token-file', join(dir, 'waypoint.token'), '--namespace', 'shop', '--service-account', 'waypoint',
    '--mesh-address', `127.0.0.1:${mesh}`, '--status-address', `127.0.0.1:${statusPort}`, '--metrics-address', `127.0.0.1:${metrics}`,
  ], ['--import', PRELOAD, ...(process.env.WAYPOINT_PRELOAD ? ['--import', process.env.WAYPOINT_PRELOAD] : []), ...flags]);
  const t0 = Date.now();
  const ready = () => new Promise<boolean>((resolve) => {
    const req = request(`http://127.0.0.1:${statusPort}/healthz/ready`, { timeout: 1000 }, (res) => { res.resume(); resolve(res.statusCode === 200); });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
  await until('waypoint ready', async () => {
    if (wp.cp.exitCode !== null) throw new Error(`weft waypoint run exited:\n${wp.out()}`);
    return ready();
  });
  console.log(`waypoint ready in ${Date.now() - t0} ms (pid ${wp.cp.pid}, node flags: ${flags.join(' ') || 'none'})`);
  const pid = wp.cp.pid!;
  await sleep(3000);
  show('idle', await reading(pid));
  // WAYPOINT_SMAPS=file: a copy of the idle process's memory map, per mapping (which files' pages are resident).
  if (process.env.WAYPOINT_SMAPS) writeFileSync(process.env.WAYPOINT_SMAPS, readFileSync(`/proc/${pid}/smaps`));
  // WAYPOINT_SNAPSHOT=file: a heap snapshot of the idle process (written by the process itself).
  if (process.env.WAYPOINT_SNAPSHOT) {
    process.kill(pid, 'SIGPWR');
    await until('heap snapshot', () => existsSync(process.env.WAYPOINT_SNAPSHOT!) && wp.out().length >= 0, 60_000);
    await sleep(3000);
  }

  // Load: TUNNELS kept-alive HTTP/1.1 connections, each an HBONE CONNECT to the Service's address.
  const pool = new HbonePool();
  const agent = new Agent({ keepAlive: true, maxSockets: TUNNELS });
  (agent as unknown as { createConnection: (o: unknown, cb: (e: Error | null, s?: Socket) => void) => void }).createConnection = (_o, cb) => {
    pool.connect({
      key: { scope: 'client', srcIdentity: 'spiffe://cluster.local/ns/shop/sa/web', dstIdentity: 'spiffe://cluster.local/ns/shop/sa/waypoint', dstAddress: '127.0.0.1' },
      port: mesh, authority: `${VIP}:80`, headers: {}, credentials: creds, dial: () => connectTo(mesh),
    }).then((t) => {
      // node:http's Agent treats its connections as sockets when it keeps them.
      const d = Object.assign(buffersOnly(t.stream), { setKeepAlive() {}, setNoDelay() {}, setTimeout() {}, ref() {}, unref() {} });
      cb(null, d as unknown as Socket);
    }, (e: Error) => cb(e));
  };
  const body = Buffer.alloc(1024, 0x62);
  let ok = 0, bad = 0, failed = 0, peak: Reading | undefined;
  const send = () => {
    const req = request({ agent, method: 'POST', path: '/', headers: { host: 'web', 'content-type': 'application/octet-stream', 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? ok++ : bad++));
    });
    req.on('error', () => failed++);
    req.end(body);
  };
  const cpu = () => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
  const cpu0 = cpu();
  const outAtStart = wp.out().length;
  const began = Date.now();
  let sent = 0;
  const tick = setInterval(() => {
    const due = Math.floor(((Date.now() - began) / 1000) * RATE);
    for (; sent < due; sent++) send();
  }, 5);
  const sampler = setInterval(() => void reading(pid).then((r) => { if (!peak || r.rss > peak.rss) peak = r; }), 2000);
  await sleep(SECONDS * 1000);
  clearInterval(tick);
  clearInterval(sampler);
  const vcpu = (cpu() - cpu0) / ((Date.now() - began) / 1000);
  // With --trace-gc among the flags: the time the load's collections took, by kind.
  const gcMs: Record<string, [number, number]> = {};
  for (const m of wp.out().slice(outAtStart).matchAll(/ms: (Scavenge|Mark-Compact|Minor Mark-Sweep)\b.*?MB, ([\d.]+) \/ ([\d.]+) ms/g)) {
    const k = (gcMs[m[1]!] ??= [0, 0]);
    k[0]++;
    k[1] += Number(m[2]);
  }
  if (Object.keys(gcMs).length) console.log(`collections during the load: ${Object.entries(gcMs).map(([k, [n, ms]]) => `${k} ${n} (${ms.toFixed(0)} ms)`).join(', ')}`);
  const last = await reading(pid);
  show('end of load', last);
  if (peak) show('peak of load', peak);
  console.log(`requests: ${ok} ok, ${bad} not 200, ${failed} failed, of ${sent} (${(ok / SECONDS).toFixed(0)}/s); waypoint ${vcpu.toFixed(3)} vCPU, ${(vcpu / (ok / SECONDS / 1000)).toFixed(3)} per 1000 req/s`);
  await sleep(3000);
  show('after load', await reading(pid));
  agent.destroy();
  pool.close(true);
  void hbone.drain(100);
  app.close();
} finally {
  for (const c of children) c.kill('SIGTERM');
  await sleep(1000);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); // a drain still waiting
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
