// make soak: a long run of the mesh under everything that changes at once (issue #17), in a
// 2-node lab. For SOAK_MINUTES (default 30):
//   - load: RATE (1000) HTTP/1.1 GETs/s in total from a client pod on node-0 to Services on node-1,
//     about half through the L4 mesh (agent → HBONE → agent) and half through a waypoint (agent →
//     waypoint → agent), on kept-alive connections that the generator closes and opens again
//     every RECYCLE (200) responses; 5 % of the rate goes to the waypoint's path /denied, the
//     deliberately denied class;
//   - policies: 10 times a second, an AuthorizationPolicy at the waypoint alternates between
//     denying /denied and denying /never (nothing), and an L4 policy of the client and server's
//     namespace alternates between two ports nobody uses (agents get a policy change as often);
//   - pods: a Deployment of PODS (100) `sleep` pods in an ambient namespace scaled to PODS and back
//     to 0 in a loop (the lab's real path: deployment controller, kubelet, CNI, agent enrollment);
//   - certificates: agents ask for a 120 s TTL and renew at half of it, every minute;
//   - control plane: killed and started again every 5 minutes (half the run if shorter).
// Every 10 s it samples RSS and open fds (by kind: sockets, BPF links, maps, programs) of each agent,
// the control plane and the waypoint from /proc, the lab's bpffs pins, and the generator's counts.
// Pass: no failed request (anything but a 2xx, and the denied class's 403s); agent and
// control-plane RSS growth < 5 % from the end of the warm-up (the first 20 % of the run) to the end;
// fds, BPF links and maps flat (at the same phase of the pod loop: bench/soak-verdict.ts says how).
// Writes bench/results/soak-<date>.json and .svg (SOAK_OUT: elsewhere) and prints a summary.
//   SOAK_MINUTES (30), SOAK_RATE (1000), SOAK_PODS (100), SOAK_LAB (weft-soak), SOAK_OUT
// `--judge FILE` judges a recorded run again (bench/soak-verdict.ts) and rewrites its result and chart.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { cgroup2Mount, ensureBpffs } from '../src/bpf/mounts.ts';
import type { KObject, Pod } from '../src/kube/objects.ts';
import { labCall } from '../src/lab/client.ts';
import { LabLayout } from '../src/lab/layout.ts';
import type { Snapshot } from '../src/lab/status.ts';
import { soakSvg } from './soak-chart.ts';
import { failedOf, verdict, type GenLine, type Proc, type Sample, type SoakRecord } from './soak-verdict.ts';

const root = join(import.meta.dirname, '..');
const BIN = join(root, 'bin/weft.js');
const MINUTES = Number(process.env.SOAK_MINUTES ?? 30);
const RATE = Number(process.env.SOAK_RATE ?? 1000);
const PODS = Number(process.env.SOAK_PODS ?? 100);
const LAB = process.env.SOAK_LAB ?? 'weft-soak';
const OUT = process.env.SOAK_OUT ?? join(root, 'bench/results');
if (!(MINUTES > 0) || !(RATE >= 20) || !(PODS >= 0)) throw new Error('SOAK_MINUTES > 0, SOAK_RATE >= 20 and SOAK_PODS >= 0, please');
const DURATION_S = Math.round(MINUTES * 60);
const WARMUP_S = Math.round(DURATION_S * 0.2);
const SAMPLE_S = 10;
const CERT_TTL_S = 120; // renewed at half its life (src/identity/cert-manager.ts): every minute
const POLICY_HZ = 10;
const CP_EVERY_S = Math.min(300, Math.round(DURATION_S / 2));
const RECYCLE = 200;
const layout = new LabLayout(LAB);
if (process.argv[2] === '--judge') {
  const file = process.argv[3];
  if (!file) throw new Error('usage: soak.ts --judge FILE.json');
  const rec = JSON.parse(readFileSync(file, 'utf8')) as SoakRecord & { result?: unknown; run_at: string; rate: number };
  rec.targets ??= splitRate(rec.rate); // runs recorded before the record held them
  rec.result = verdict(rec);
  writeFileSync(file, JSON.stringify(rec, null, 1) + '\n');
  writeFileSync(file.replace(/\.json$/, '.svg'), soakSvg({ samples: rec.samples, released: rec.released_samples, warmupS: rec.warmup_s, restarts: rec.control_plane_restarts.map((e) => e.t), title: `weft soak: ${rec.minutes} min, ${rec.rate} req/s, ${rec.run_at.slice(0, 16)}Z` }));
  console.log(JSON.stringify(rec.result, null, 1));
  process.exit((rec.result as { pass: boolean }).pass ? 0 : 2);
}
const log = (s: string) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function weft(args: string[], timeoutMs = 300_000): string {
  const r = spawnSync(process.execPath, [BIN, args[0]!, '--name', LAB, ...args.slice(1)], { encoding: 'utf8', timeout: timeoutMs, cwd: root });
  if (r.status !== 0) throw new Error(`weft ${args.join(' ')}: exit ${r.status}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}
// Generous: the lab daemon answers late while it starts or stops 100 pods.
const state = () => labCall<Snapshot>(layout, 'GET', '/v1/state', undefined, 120_000);
const apply = (objects: KObject[]) => labCall<{ results: { error?: string; object: string }[] }>(layout, 'POST', '/v1/apply', { objects }, 300_000);

// ---- the lab's objects -------------------------------------------------------------------------
const HTTP_PORT = 8080;
const tsxArgv = (tool: string, ...args: string[]) => ['node', '--import', 'tsx', join(root, 'bench/tools', tool), ...args];
const nsObj = (name: string, labels: Record<string, string> = {}): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }) as KObject;
const ambient = { 'istio.io/dataplane-mode': 'ambient' };
const serverPod = (ns: string): KObject =>
  ({
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'server', namespace: ns, labels: { app: 'server' } },
    spec: { nodeName: 'node-1', containers: [{ name: 'http', command: tsxArgv('http-server.ts', String(HTTP_PORT), '1024'), workingDir: root, ports: [{ name: 'http', containerPort: HTTP_PORT }], readinessProbe: { tcpSocket: { port: HTTP_PORT }, periodSeconds: 2 } }] },
  }) as unknown as KObject;
const clientPod = (ns: string): KObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'client', namespace: ns }, spec: { nodeName: 'node-0', containers: [{ name: 'shell', image: 'weft/sleep' }] } }) as unknown as KObject;
const service = (ns: string): KObject =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'http', namespace: ns }, spec: { selector: { app: 'server' }, ports: [{ name: 'http', port: 80, targetPort: HTTP_PORT }] } }) as unknown as KObject;
const churn = (replicas: number): KObject =>
  ({
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'churn', namespace: 'soak-pods' },
    spec: { replicas, selector: { matchLabels: { app: 'churn' } }, template: { metadata: { labels: { app: 'churn' } }, spec: { containers: [{ name: 'sleep', image: 'weft/sleep' }] } } },
  }) as unknown as KObject;
/** The policy pair of one tick: `deny` says whether the waypoint denies /denied on this one. */
const policies = (deny: boolean): KObject[] => [
  {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'soak-deny', namespace: 'soak-wp' },
    spec: { targetRefs: [{ kind: 'Service', group: '', name: 'http' }], action: 'DENY', rules: [{ to: [{ operation: { paths: [deny ? '/denied' : '/never'] } }] }] },
  } as unknown as KObject,
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'soak-l4', namespace: 'soak-mesh' }, spec: { action: 'DENY', rules: [{ to: [{ operation: { ports: [deny ? '9' : '10'] } }] }] } } as unknown as KObject,
];
const manifests = (): KObject[] => [
  nsObj('soak-direct'), serverPod('soak-direct'), clientPod('soak-direct'),
  nsObj('soak-mesh', ambient), serverPod('soak-mesh'), service('soak-mesh'), clientPod('soak-mesh'),
  nsObj('soak-wp', { ...ambient, 'istio.io/use-waypoint': 'waypoint' }),
  { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'soak-wp' }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } } as unknown as KObject,
  serverPod('soak-wp'), service('soak-wp'),
  nsObj('soak-pods', ambient), churn(0),
];

/**
 * The generator's targets for a total rate: half through the L4 mesh, the rest through the
 * waypoint, 5 % of the total of it the denied class; about 60 req/s per kept-alive connection.
 */
function splitRate(rate: number): { name: string; rate: number; conns: number }[] {
  const half = Math.round(rate / 2);
  const denied = Math.round(rate * 0.05);
  const conns = (r: number) => Math.max(2, Math.ceil(r / 60));
  return [
    { name: 'mesh', rate: half, conns: conns(half) },
    { name: 'waypoint', rate: rate - half - denied, conns: conns(rate - half - denied) },
    { name: 'denied', rate: denied, conns: conns(denied) },
  ];
}

// ---- what is sampled ---------------------------------------------------------------------------
function proc(pid: number | undefined): Proc | undefined {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    const p: Proc = { pid, rssMb: Math.round((Number(m?.[1] ?? 0) / 1024) * 10) / 10, fds: 0, sockets: 0, bpfLinks: 0, bpfMaps: 0, bpfProgs: 0 };
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let l: string;
      try {
        l = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue; // closed meanwhile
      }
      p.fds++;
      if (l.startsWith('socket:')) p.sockets++;
      else if (l === 'anon_inode:bpf-link') p.bpfLinks++;
      else if (l === 'anon_inode:bpf-map') p.bpfMaps++;
      else if (l === 'anon_inode:bpf-prog') p.bpfProgs++;
    }
    return p;
  } catch {
    return undefined; // gone (the control plane between kill and start)
  }
}
const controlPid = () => {
  try {
    return Number(readFileSync(join(layout.cgroupRoot(cgroup2Mount()), 'control', 'cgroup.procs'), 'utf8').split('\n')[0]) || undefined;
  } catch {
    return undefined;
  }
};
function podPid(ns: string, pod: string): number | undefined {
  const r = spawnSync('ip', ['netns', 'pids', layout.podNetns(ns, pod)], { encoding: 'utf8' });
  // The waypoint pod runs one process (node); take the biggest should there be more.
  const pids = r.stdout.split('\n').filter(Boolean).map(Number);
  return pids.map((p) => proc(p)).filter((p): p is Proc => !!p).sort((a, b) => b.rssMb - a.rssMb)[0]?.pid;
}
/**
 * The lab's BPF objects pinned on bpffs, per node: links (the per-pod cgroup and sk_lookup
 * attachments, `link_*`) and maps (the rest). The agents attach with pinned links and close their
 * fds, so the links are counted here, not among the agents' fds.
 */
function pinned(): Record<string, { links: number; maps: number }> {
  const out: Record<string, { links: number; maps: number }> = {};
  const base = layout.bpffsDir(ensureBpffs());
  const walk = (dir: string, acc: { links: number; maps: number }) => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // a pod's directory removed by its agent while we walk
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(dir, e.name), acc);
      else if (e.name.startsWith('link_')) acc.links++;
      else acc.maps++;
    }
  };
  if (existsSync(base)) for (const node of readdirSync(base)) walk(join(base, node), (out[node] = { links: 0, maps: 0 }));
  return out;
}
const bpftoolCount = (what: 'link' | 'map') => {
  const r = spawnSync('bpftool', ['-j', what, 'list'], { encoding: 'utf8' });
  try {
    return (JSON.parse(r.stdout) as unknown[]).length;
  } catch {
    return -1;
  }
};
/** Certificates the agents were issued (first issue and renewals), read from their logs as they grow. */
const logOffsets = new Map<string, number>();
const certsIssued = new Map<string, number>();
function countCerts(): number {
  for (const f of existsSync(layout.logDir) ? readdirSync(layout.logDir).filter((x) => x.startsWith('agent_')) : []) {
    const path = join(layout.logDir, f);
    const size = statSync(path).size;
    let off = logOffsets.get(f) ?? 0;
    if (size < off) off = 0;
    if (size === off) continue;
    const fd = openSync(path, 'r');
    const buf = Buffer.alloc(size - off);
    readSync(fd, buf, 0, buf.length, off);
    closeSync(fd);
    const text = buf.toString('utf8');
    const end = text.lastIndexOf('\n') + 1; // whole lines only
    const n = text.slice(0, end).split('\n').filter((l) => l.includes('"workload certificate issued"')).length;
    certsIssued.set(f, (certsIssued.get(f) ?? 0) + n);
    logOffsets.set(f, off + Buffer.byteLength(text.slice(0, end)));
  }
  return [...certsIssued.values()].reduce((a, b) => a + b, 0);
}

// ---- the run -----------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'weft-soak-'));
const t0 = Date.now();
const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, kernel: release(), node: process.version };
const samples: Sample[] = [];
const genLines: GenLine[] = [];
const cpEvents: { t: number; downS: number; error?: string }[] = [];
const podCycles: { t: number; up: number; upS: number; downS: number; error?: string }[] = [];
/** Samples taken right after the pod loop released every pod: the phase the flatness check compares. */
const released: Sample[] = [];
let phase = 'idle';
let churnPods = 0;
let policyChanges = 0;
let policyLate = 0;
let policyErrors = 0;
let stop = false;
let floor: GenLine | undefined;
let lastGen: GenLine | undefined;
const elapsed = () => Math.round((Date.now() - tStart) / 100) / 10;
let tStart = Date.now();

function sample(): Sample {
  const p = restarting ? undefined : controlPushes();
  if (p !== undefined) pushesNow = p;
  const ticks = machineTicks();
  const busyPct = Math.round(((ticks.busy - lastTicks.busy) / Math.max(1, ticks.total - lastTicks.total)) * 1000) / 10;
  const stealPct = Math.round(((ticks.steal - lastTicks.steal) / Math.max(1, ticks.total - lastTicks.total)) * 1000) / 10;
  lastTicks = ticks;
  const s: Sample = {
    t: elapsed(), phase, churnPods, busyPct, stealPct, agents: {}, control: proc(controlPid()), waypoint: proc(waypointPid), pinned: pinned(),
    machineBpfLinks: bpftoolCount('link'), machineBpfMaps: bpftoolCount('map'), certsIssued: countCerts(), policyChanges, controlPushes: pushesBefore + pushesNow,
    requests: { ok: 0, failed: 0, denied: 0, deniedClassOk: 0, sent: 0 },
  };
  for (const [node, pid] of agentPids) s.agents[node] = agentProc(node, pid);
  for (const [name, c] of Object.entries(lastGen?.targets ?? {})) {
    s.requests.sent += c.sent;
    s.requests.failed += failedOf(c);
    s.requests.denied += c.denied;
    if (name === 'denied') s.requests.deniedClassOk += c.ok;
    else s.requests.ok += c.ok;
  }
  return s;
}

async function genRun(pod: string, seconds: number, targets: object[], onLine: (l: GenLine) => void): Promise<GenLine> {
  const specJson = JSON.stringify({ seconds, reportEvery: SAMPLE_S, recycleAfter: RECYCLE, timeoutMs: 10_000, targets });
  const child = spawn(process.execPath, [BIN, 'exec', '--name', LAB, pod, '--', ...tsxArgv('soak-loadgen.ts', specJson)], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  let final: GenLine | undefined;
  for await (const line of createInterface({ input: child.stdout })) {
    let l: GenLine;
    try {
      l = JSON.parse(line) as GenLine;
    } catch {
      continue;
    }
    onLine(l);
    if (l.final) final = l;
  }
  const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', (c) => r(c))));
  if (!final) throw new Error(`load generator in ${pod} ended without its result (exit ${code}): ${err}`);
  return final;
}

async function until<T>(what: string, seconds: number, f: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = await Promise.resolve(f()).catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await sleep(500);
  }
}
const curl = (pod: string, url: string) => spawnSync(process.execPath, [BIN, 'exec', '--name', LAB, pod, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', url], { encoding: 'utf8', cwd: root }).stdout.trim();

let waypointPid: number | undefined;
const agentPids = new Map<string, number>();
const refreshPids = async () => {
  const s = await state();
  churnPods = s.pods.filter((p) => p.metadata.namespace === 'soak-pods' && p.status?.phase === 'Running').length;
  for (const n of s.nodes) agentPids.set(n.metadata.name, Number(n.metadata.annotations?.['weft.dev/agent-pid']));
  const wp = s.pods.find((p) => p.metadata.namespace === 'soak-wp' && p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === 'waypoint' && p.status?.phase === 'Running');
  waypointPid = wp ? podPid('soak-wp', wp.metadata.name) : undefined;
};

/**
 * Policy changes go straight into the directory the control plane watches (`--config-dir`, the
 * lab's stand-in for the Kubernetes API: the lab mirrors its objects there), as a file of its own
 * that the lab's mirror leaves alone. Through `weft apply` each change would also wait for the lab
 * daemon's reconcile of every pod and kube-proxy rule (serialized with the pod loop's scaling):
 * about 4 changes/s on this machine, a limit of the lab and not of the mesh.
 */
const policyFile = () => join(layout.stateDir, 'config', 'soak-policies.yaml');
function writePolicies(deny: boolean) {
  const tmp = join(layout.stateDir, 'config', '.soak-policies.yaml.tmp'); // dot files are not read
  writeFileSync(tmp, policies(deny).map((o) => stringify(o)).join('---\n'));
  renameSync(tmp, policyFile());
}
async function policyLoop() {
  // Fixed ticks every 100 ms (setInterval keeps the rate; a late tick is counted).
  let deny = true;
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    if (now - last > 150) policyLate++;
    last = now;
    deny = !deny;
    try {
      writePolicies(deny);
      policyChanges++;
    } catch {
      policyErrors++;
    }
  }, 1000 / POLICY_HZ);
  while (!stop) await sleep(200);
  clearInterval(timer);
}
/** An agent's dial sockets made ahead of time (weft_agent_dial_sockets_ready), from its metrics. */
function dialSocketsReady(node: string): number | undefined {
  const r = spawnSync('ip', ['netns', 'exec', layout.nodeNetns(node), 'curl', '-s', '-m', '2', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' });
  const m = /^weft_agent_dial_sockets_ready (\d+)/m.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}
/**
 * An agent's fds with its ready dial sockets, read on both sides of the fd count: a pool refill
 * between the two reads would count its batch as held, so the pair is read again (3 tries).
 */
function agentProc(node: string, pid: number): Proc | undefined {
  let p: Proc | undefined;
  for (let i = 0; i < 3; i++) {
    const before = dialSocketsReady(node);
    p = proc(pid);
    const after = dialSocketsReady(node);
    if (p && before !== undefined && before === after) return { ...p, dialSocketsReady: before };
  }
  return p;
}
/** Model builds pushed to the xDS streams by the running control plane (since its start). */
function controlPushes(): number | undefined {
  const r = spawnSync('ip', ['netns', 'exec', layout.fabricNetns, 'curl', '-s', '-m', '2', 'http://127.0.0.1:15014/metrics'], { encoding: 'utf8' });
  const m = /^weft_control_model_build_seconds_count(?:\{[^}]*\})? (\d+)/m.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}
let pushesBefore = 0; // builds of the control plane's previous lives
let pushesNow = 0;
let restarting = false;
/** /proc/stat's first line: busy, stolen and total ticks of the whole machine. */
function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, steal: f[7] ?? 0, total };
}
let lastTicks = machineTicks();

const churnRunning = async () => (await state()).pods.filter((p: Pod) => p.metadata.namespace === 'soak-pods');
async function podLoop() {
  while (!stop) {
    const c0 = Date.now();
    const cycle = { t: elapsed(), up: 0, upS: 0, downS: 0 } as (typeof podCycles)[number];
    try {
      phase = 'enrolling';
      await apply([churn(PODS)]);
      await until(`${PODS} churn pods running`, 300, async () => {
        const ps = await churnRunning();
        churnPods = ps.length;
        return ps.filter((p) => p.status?.phase === 'Running').length >= PODS || stop ? true : undefined;
      });
      cycle.up = churnPods;
      cycle.upS = Math.round((Date.now() - c0) / 100) / 10;
      phase = 'releasing';
      const c1 = Date.now();
      await apply([churn(0)]);
      await until('the churn pods gone', 300, async () => {
        const ps = await churnRunning();
        churnPods = ps.length;
        return ps.length === 0 ? true : undefined;
      });
      cycle.downS = Math.round((Date.now() - c1) / 100) / 10;
      phase = 'released';
      // Let the agents finish releasing (their per-pod state goes after the pod's removal is seen).
      await sleep(3000);
      if (elapsed() >= WARMUP_S && elapsed() < DURATION_S - 1) released.push(sample());
    } catch (e) {
      cycle.error = (e as Error).message;
      log(`pod loop: ${cycle.error}`);
    }
    podCycles.push(cycle);
  }
  await apply([churn(0)]).catch(() => {});
}

async function controlLoop() {
  let next = CP_EVERY_S;
  while (!stop) {
    if (elapsed() < next) {
      await sleep(250);
      continue;
    }
    next += CP_EVERY_S;
    const before = proc(controlPid());
    const k = Date.now();
    const ev: (typeof cpEvents)[number] = { t: elapsed(), downS: 0 };
    try {
      // The sample just before the kill: the end of this life's memory, compared life to life.
      if (before) cpLifeEnds.push({ t: elapsed(), ...before });
      restarting = true;
      pushesBefore += controlPushes() ?? pushesNow;
      pushesNow = 0;
      await labCall(layout, 'POST', '/v1/control/kill', undefined, 60_000);
      await labCall(layout, 'POST', '/v1/control/start', undefined, 60_000);
      // `start` returns once the CA root is on disk, which it already was: wait for it to serve.
      await until('the control plane to serve again', 60, () => (controlPushes() !== undefined ? true : undefined));
    } catch (e) {
      ev.error = (e as Error).message;
    }
    restarting = false;
    ev.downS = Math.round((Date.now() - k) / 100) / 10;
    cpEvents.push(ev);
    log(`control plane killed and started again (${ev.downS} s)${ev.error ? `: ${ev.error}` : ''}`);
  }
}
const cpLifeEnds: (Proc & { t: number })[] = [];

spawnSync(process.execPath, [BIN, 'down', '--name', LAB], { stdio: 'ignore' });
const manifestFile = join(dir, 'soak.yaml');
writeFileSync(manifestFile, manifests().map((o) => stringify(o)).join('---\n'));
let result: Record<string, unknown> | undefined;
let targetList: { name: string; rate: number; conns: number }[] = [];
let exitCode = 1;
try {
  log(`lab up (${LAB}, certificates of ${CERT_TTL_S} s)`);
  weft(['up', '--nodes', '2', '--cert-ttl', String(CERT_TTL_S), '-f', manifestFile, '--timeout', '300'], 400_000);
  for (const p of ['soak-direct/client', 'soak-mesh/client']) weft(['exec', p, '--', 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
  const snap = await state();
  const ip = (ns: string) => snap.pods.find((p) => p.metadata.namespace === ns && p.metadata.name === 'server')!.status!.podIP!;
  const vip = (ns: string) => snap.services.find((s) => s.metadata.namespace === ns && s.metadata.name === 'http')!.spec.clusterIP!;
  // The waypoint is in the path and enforces its policy: /denied is refused, / answered.
  writePolicies(true);
  const wpUrl = `http://http.soak-wp.svc.cluster.local`;
  await until('the waypoint to deny /denied', 180, () => (curl('soak-mesh/client', `${wpUrl}/denied`) === '403' ? true : undefined));
  await until('the waypoint to answer /', 60, () => (curl('soak-mesh/client', `${wpUrl}/`) === '200' ? true : undefined));
  await until('the L4 mesh path', 60, () => (curl('soak-mesh/client', 'http://http.soak-mesh.svc.cluster.local/') === '200' ? true : undefined));
  await refreshPids();
  log(`agents ${[...agentPids].map(([n, p]) => `${n}=${p}`).join(' ')}, control plane ${controlPid()}, waypoint ${waypointPid}`);

  const split = splitRate(RATE);
  const vips = { mesh: vip('soak-mesh'), waypoint: vip('soak-wp'), denied: vip('soak-wp') };
  const targets = split.map((t) => ({
    ...t, host: vips[t.name as keyof typeof vips], port: 80,
    authority: `http.${t.name === 'mesh' ? 'soak-mesh' : 'soak-wp'}.svc.cluster.local`, path: t.name === 'denied' ? '/denied' : '/', deniable: t.name === 'denied',
  }));
  targetList = targets;
  // The generator's floor: the same generator at the same rate and connections, straight to a
  // server pod outside the mesh (no agent, no waypoint), for 20 s before the soak.
  // A floor measured while the lab's processes still start (module loading, JIT) is the machine's
  // start-up, not the generator: wait for a quiet second first (bounded).
  for (let i = 0; i < 30; i++) {
    const a = machineTicks();
    await sleep(1000);
    const b = machineTicks();
    if ((b.busy - a.busy) / Math.max(1, b.total - a.total) < 0.2) break;
  }
  log(`generator floor: ${RATE} req/s straight to a pod outside the mesh, 20 s`);
  floor = await genRun('soak-direct/client', 20, [{ name: 'direct', host: ip('soak-direct'), port: HTTP_PORT, authority: 'server', path: '/', rate: RATE, conns: targets.reduce((a, t) => a + t.conns, 0) }], () => {});
  log(`floor: ${JSON.stringify(floor.targets.direct)}`);

  log(`soak: ${MINUTES} min at ${RATE} req/s (${targets.map((t) => `${t.name} ${t.rate}/s on ${t.conns}`).join(', ')}), policy ${POLICY_HZ}/s, ${PODS} pods in a loop, control plane restart every ${CP_EVERY_S} s, warm-up ${WARMUP_S} s`);
  tStart = Date.now();
  const gen = genRun('soak-mesh/client', DURATION_S, targets, (l) => {
    lastGen = l;
    genLines.push(l);
  });
  const loops = [policyLoop(), podLoop(), controlLoop()];
  let nextSample = 0;
  while (elapsed() < DURATION_S) {
    if (elapsed() >= nextSample) {
      // A sample delayed by a busy lab daemon (its state answers late) is not followed by a second one at once.
      nextSample = Math.max(nextSample + SAMPLE_S, elapsed() + SAMPLE_S / 2);
      await refreshPids().catch(() => {});
      let s: Sample;
      try {
        s = sample();
      } catch (e) {
        log(`sample failed: ${(e as Error).message}`); // a sampling hiccup must not end the run
        continue;
      }
      samples.push(s);
      const a = Object.entries(s.agents).map(([n, p]) => `${n} ${p?.rssMb} MB/${p?.fds} fd/${s.pinned[n]?.links} links/${s.pinned[n]?.maps}+${p?.bpfMaps} maps`).join(', ');
      log(`t=${s.t}s ${phase} pods=${churnPods} cpu ${s.busyPct}% | ${a} | control ${s.control?.rssMb ?? '-'} MB/${s.control?.fds ?? '-'} fd | waypoint ${s.waypoint?.rssMb ?? '-'} MB | ok ${s.requests.ok} failed ${s.requests.failed} denied ${s.requests.denied} | policies ${policyChanges} pushes ${s.controlPushes} certs ${s.certsIssued}`);
    }
    await sleep(250);
  }
  stop = true;
  await Promise.all(loops);
  const final = await gen;
  lastGen = final;
  await refreshPids().catch(() => {});
  samples.push(sample());
} catch (e) {
  log(`soak failed to run: ${(e as Error).stack}`);
  result = { error: (e as Error).message };
} finally {
  stop = true;
  log('lab down');
  spawnSync(process.execPath, [BIN, 'down', '--name', LAB], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
}

const runAt = new Date(t0).toISOString();
const stamp = runAt.replace(/[:.]/g, '-');
mkdirSync(OUT, { recursive: true });
const out = {
  run_at: runAt, command: 'make soak', machine, minutes: MINUTES, rate: RATE, pods: PODS, cert_ttl_s: CERT_TTL_S, policy_hz: POLICY_HZ, control_plane_every_s: CP_EVERY_S, warmup_s: WARMUP_S, recycle_after: RECYCLE,
  targets: targetList, floor: floor?.targets, result, policy: { changes: policyChanges, late_ticks: policyLate, errors: policyErrors, control_plane_pushes: pushesBefore + pushesNow }, control_plane_restarts: cpEvents, control_plane_life_ends: cpLifeEnds, pod_cycles: podCycles,
  released_samples: released, samples, generator: genLines,
};
if (!result) {
  result = verdict(out);
  exitCode = (result.pass as boolean) ? 0 : 2;
  out.result = result;
}
const jsonPath = join(OUT, `soak-${stamp}.json`);
const svgPath = join(OUT, `soak-${stamp}.svg`);
writeFileSync(jsonPath, JSON.stringify(out, null, 1) + '\n');
if (samples.length) writeFileSync(svgPath, soakSvg({ samples, released, warmupS: WARMUP_S, restarts: cpEvents.map((e) => e.t), title: `weft soak: ${MINUTES} min, ${RATE} req/s, ${runAt.slice(0, 16)}Z` }));
console.log(JSON.stringify(result, null, 1));
log(`written ${jsonPath}${samples.length ? ` and ${svgPath}` : ''}`);
process.exit(exitCode);
