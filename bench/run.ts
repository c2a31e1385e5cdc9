// make bench: one 2-node lab, the same client and server pods for five TCP paths (direct, weft
// with eBPF capture across nodes and on one node, weft with in-pod iptables capture, HAProxy
// mutual TLS) and five HTTP/1.1 paths (direct, weft's L4 path, weft's L4 path through a waypoint,
// HAProxy's L4 path, HAProxy's L4 path through an L7 HAProxy; see setup.ts), measured in one run.
// Writes bench/results/<timestamp>.json, tables and charts, and the results section of
// BENCHMARKS.md. BENCH_SECONDS sets the length of each latency run.
//
// A quicker subset, for iterating on the data path (1-2 minutes instead of 8):
//   BENCH_PATHS=direct,weft-ebpf,haproxy-mtls   only these paths (default: all ten)
//   BENCH_PATHS=weft-waypoint,weft-ebpf-http,haproxy-http,haproxy-mtls-http   the waypoint's L7 hop
//                 against HAProxy's (HTTP paths have latency and cpu figures only)
//   BENCH_FIGURES=throughput,latency,connrate,cpu,rss   only these figures (default: all;
//                 cpu is measured during the 1000 req/s latency run, so it implies that run)
//   BENCH_RATES=1000                          latency rates (default 500,1000,2000)
//   BENCH_PROFILE=0                           agents without --cpu-prof
//   BENCH_KEEP_PROFILES=DIR                   a subset run keeps the .cpuprofile files there
// A subset run prints its table and ratios and writes its JSON only to its temporary directory:
// bench/results and BENCHMARKS.md are written by a full run alone.
import { spawnSync } from 'node:child_process';
import { cpus, release } from 'node:os';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Noise, RunSummary } from './compare.ts';
import { connRate, cpuSeconds, httpLatency, latency, machineTicks, podPids, rssMb, settle, stealPct, throughput as measureThroughput, weft } from './measure.ts';
import { hotFunctions, profileParts } from './profile.ts';
import { httpTable, MAX_REDO, RATES, stalledRound, type PathResult } from './report.ts';
import { generatorFloor, IDLE_SECONDS, writeRecordedRun } from './record.ts';
import {
  BENCH_PODS,
  haproxyClientConfig,
  haproxyMiddle,
  HTTP_PATHS,
  HTTP_PORT,
  HTTP_SERVICE,
  MIDDLE_POD,
  PATHS,
  scalePods,
  WAYPOINT_GATEWAY,
  WAYPOINT_NS,
  writeBenchConfig,
  SECURE_SERVICE,
  TOKEN_HEADER_FILE,
  type PathName,
} from './setup.ts';

const LAB = process.env.BENCH_LAB ?? 'weft-bench';
const FIGURES = ['throughput', 'latency', 'connrate', 'cpu', 'rss'] as const;
type Figure = (typeof FIGURES)[number];
const list = (v: string | undefined) => v?.split(',').map((x) => x.trim()).filter(Boolean);
const selPaths = list(process.env.BENCH_PATHS) ?? [...PATHS];
const selFigures = list(process.env.BENCH_FIGURES) ?? [...FIGURES];
const selRates = (list(process.env.BENCH_RATES) ?? RATES.map(String)).map(Number);
for (const x of selPaths) if (!(PATHS as readonly string[]).includes(x)) throw new Error(`BENCH_PATHS: unknown path ${x} (${PATHS.join(', ')})`);
for (const x of selFigures) if (!(FIGURES as readonly string[]).includes(x)) throw new Error(`BENCH_FIGURES: unknown figure ${x} (${FIGURES.join(', ')})`);
const want = (f: Figure) => selFigures.includes(f);
if (want('cpu') && !selRates.includes(1000)) selRates.push(1000);
const FULL = selPaths.length === PATHS.length && FIGURES.every(want) && RATES.every((x) => selRates.includes(x));
const PROFILE = process.env.BENCH_PROFILE !== '0';
const idleVcpu: Record<string, number[]> = {};
async function idleCpu(pids: number[], seconds: number): Promise<number[]> {
  const b = pids.map(cpuSeconds);
  const t = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const secs = Number(process.hrtime.bigint() - t) / 1e9;
  return pids.map((p, i) => (cpuSeconds(p) - b[i]!) / secs);
}
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const IPERF_SECONDS = Number(process.env.BENCH_IPERF_SECONDS ?? 5);
const SCALE_PODS = Number(process.env.BENCH_SCALE_PODS ?? 100);
const root = join(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'weft-bench-'));
const profDir = join(dir, 'prof');
mkdirSync(profDir);
// The waypoint's profiles: not under /tmp, which the waypoint pod mounts an emptyDir over.
const wpProfDir = mkdtempSync('/var/tmp/weft-bench-waypoint-prof-');
const log = (s: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}`);

type PodJ = {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  spec: { nodeName?: string };
  status: { podIP: string; phase: string; conditions?: { type: string; status: string }[] };
};
const pods = (ns = '-A') => (JSON.parse(weft(LAB, ['get', 'pods', ...(ns === '-A' ? ['-A'] : ['-n', ns]), '-o', 'json'])) as { items: PodJ[] }).items;
const ip = (ns: string, name: string) => pods(ns).find((p) => p.metadata.name === name)!.status.podIP;
const clusterIP = (ns: string, name: string) =>
  (JSON.parse(weft(LAB, ['get', 'services', '-n', ns, '-o', 'json'])) as { items: { metadata: { name: string }; spec: { clusterIP: string } }[] }).items.find((s) => s.metadata.name === name)!.spec.clusterIP;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, seconds: number, f: () => T | undefined): Promise<T> {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    let v: T | undefined;
    try {
      v = f();
    } catch {}
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await sleep(500);
  }
}
const waypointPod = () => pods(WAYPOINT_NS).find((p) => p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === WAYPOINT_GATEWAY && p.status.phase === 'Running');
/** The waypoint's istio_requests_total{reporter="waypoint"}, summed (its metrics on podIP:15020, read from node-0). */
const waypointRequests = (podIP: string) =>
  spawnSync('ip', ['netns', 'exec', `${LAB}.node-0`, 'curl', '-s', '-m', '5', `http://${podIP}:15020/metrics`], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"'))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
// The two HAProxy instances (client pod, server pod), found by their configs in this run's directory.
const haproxyPids = () =>
  ['haproxy-client.cfg', 'haproxy-server.cfg'].map((cfg) => {
    const r = spawnSync('pgrep', ['-f', '-o', join(dir, cfg)], { encoding: 'utf8' });
    const pid = Number(r.stdout.trim().split('\n')[0]);
    if (!pid) throw new Error(`no HAProxy process with ${cfg}`);
    return pid;
  });
const agentPids = () =>
  (JSON.parse(weft(LAB, ['get', 'nodes', '-o', 'json'])) as { items: { metadata: { annotations: Record<string, string> } }[] }).items.map((n) => Number(n.metadata.annotations['weft.dev/agent-pid']));

interface Target {
  pod: string;
  host: string;
  port: number;
  mesh: boolean;
  /** HAProxy's two instances, measured like the agents: what a C proxy costs on this machine. */
  haproxy?: boolean;
  /** An HTTP path: weft-load in mode http with this Host header (and the header lines of headerFile), instead of mode tcp. */
  http?: { authority: string; headerFile?: string };
  /** The processes of the path's L7 proxy (the waypoint pod, HAProxy's middle pod), measured alike. */
  l7?: () => number[];
}

const machine = {
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  kernel: release(),
  node: process.version,
};

spawnSync(process.execPath, [join(root, 'bin/weft.js'), 'down', '--name', LAB], { stdio: 'ignore' });
await writeBenchConfig(dir);
// A 10 ms sampling interval: at Node's default 1 ms the profiler alone keeps an idle agent at
// ~0.08 vCPU (measured in a lab: 0.006 without it) and interrupts every agent's event loop.
if (PROFILE) process.env.WEFT_AGENT_NODE_ARGS = `--cpu-prof --cpu-prof-interval=10000 --cpu-prof-dir=${profDir}`;
// The waypoint under the same profiler, so a miss of its targets comes with where its CPU went.
if (PROFILE) process.env.WEFT_IMAGE_NODE_ARGS = `--cpu-prof --cpu-prof-interval=10000 --cpu-prof-dir=${wpProfDir}`;
if (!FULL) log(`subset run: paths ${selPaths.join(',')}; figures ${selFigures.join(',')}; rates ${selRates.join(',')}`);
const t0 = Date.now();
const ticks0 = machineTicks();
log(`lab up (manifests in ${dir})`);
weft(LAB, ['up', '--nodes', '2', '-f', join(dir, 'bench.yaml'), '--timeout', '300'], 400_000);
const results: Partial<Record<PathName, PathResult>> = {};
let noise: Noise = { p50Pct: 0, p99Pct: 0 };
try {
  // Every path opens thousands of connections to one server address. With the default
  // tcp_tw_reuse (loopback only) the clients' TIME_WAIT sockets soon leave connect() searching for
  // free ports, and a path's later rounds measured that (direct fell from ~1100 to ~110 conn/s
  // between its two rounds). Load generators set it; so does the bench, in the client pods. The
  // server pods keep the default: the agent's dials to the app there bind their own ports
  // (native/net.cc BindDialPort), and the bench would hide it if they did not.
  for (const pod of BENCH_PODS.filter((p) => p.endsWith('/client'))) weft(LAB, ['exec', pod, '--', 'sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=1']);
  // The waypoint runs where the lab's scheduler put it; HAProxy's L7 proxy goes to the same node,
  // so both L7 hops have the same place in their paths.
  const wp = await until('the waypoint pod', 120, waypointPod);
  const wpNode = wp.spec.nodeName;
  if (!wpNode) throw new Error(`waypoint pod ${wp.metadata.name} has no node`);
  weft(LAB, ['apply', '-f', haproxyMiddle(dir, ip('bench-haproxy', 'server'), wpNode)]);
  const middle = await until('HAProxy\'s L7 proxy pod', 60, () => pods('bench-haproxy').find((p) => p.metadata.name === MIDDLE_POD && p.status.phase === 'Running' && p.status.podIP));
  log(`waypoint ${wp.metadata.name} and HAProxy's L7 proxy on ${wpNode}`);
  const hap = haproxyClientConfig(dir, ip('bench-haproxy', 'server'), middle.status.podIP);
  weft(LAB, ['exec', 'bench-haproxy/client', '--', 'haproxy', '-D', '-f', hap]);
  const http = (ns: string) => ({ authority: `${HTTP_SERVICE}.${ns}.svc.cluster.local` });
  const targets: Record<PathName, Target> = {
    direct: { pod: 'bench-direct/client', host: ip('bench-direct', 'server'), port: 7000, mesh: false },
    'weft-ebpf': { pod: 'bench-ebpf/client', host: ip('bench-ebpf', 'server'), port: 7000, mesh: true },
    'weft-ebpf-same-node': { pod: 'bench-local/client', host: ip('bench-local', 'server'), port: 7000, mesh: true },
    'weft-iptables': { pod: 'bench-ipt/client', host: ip('bench-ipt', 'server'), port: 7000, mesh: true },
    'haproxy-mtls': { pod: 'bench-haproxy/client', host: '127.0.0.1', port: 7000, mesh: false, haproxy: true },
    // HTTP: the mesh paths go to the Service's address, as the waypoint serves a Service.
    'direct-http': { pod: 'bench-direct/client', host: ip('bench-direct', 'server'), port: HTTP_PORT, mesh: false, http: { authority: 'server' } },
    'weft-ebpf-http': { pod: 'bench-ebpf/client', host: clusterIP('bench-ebpf', HTTP_SERVICE), port: 80, mesh: true, http: http('bench-ebpf') },
    'weft-waypoint': {
      pod: `${WAYPOINT_NS}/client`, host: clusterIP(WAYPOINT_NS, HTTP_SERVICE), port: 80, mesh: true, http: http(WAYPOINT_NS),
      l7: () => podPids(LAB, WAYPOINT_NS, waypointPod()!.metadata.name),
    },
    // The same waypoint with a JWT to verify and an L7 AuthorizationPolicy to evaluate per request.
    'weft-waypoint-jwt-authz': {
      pod: `${WAYPOINT_NS}/client`, host: clusterIP(WAYPOINT_NS, SECURE_SERVICE), port: 80, mesh: true,
      http: { authority: `${SECURE_SERVICE}.${WAYPOINT_NS}.svc.cluster.local`, headerFile: join(dir, TOKEN_HEADER_FILE) },
      l7: () => podPids(LAB, WAYPOINT_NS, waypointPod()!.metadata.name),
    },
    'haproxy-mtls-http': { pod: 'bench-haproxy/client', host: '127.0.0.1', port: HTTP_PORT, mesh: false, haproxy: true, http: { authority: 'server' } },
    'haproxy-http': { pod: 'bench-haproxy/client', host: '127.0.0.1', port: HTTP_PORT + 1, mesh: false, haproxy: true, http: { authority: 'server' }, l7: () => podPids(LAB, 'bench-haproxy', MIDDLE_POD) },
  };
  const run = (t: Target, rate: number, seconds: number) =>
    t.http ? httpLatency(LAB, t.pod, t.host, t.port, rate, seconds, t.http.authority, t.http.headerFile) : latency(LAB, t.pod, t.host, t.port, rate, seconds);
  for (const name of ['weft-waypoint', 'weft-waypoint-jwt-authz'] as const) {
    if (!selPaths.includes(name)) continue;
    // The waypoint's routes (and policies) arrive over xDS after its pod is ready: wait until requests
    // to the Service are answered and counted by the waypoint, so the path measured is the one meant.
    const t = targets[name];
    const counted = await until(`requests through the waypoint (${name})`, 90, () => {
      const before = waypointRequests(wp.status.podIP);
      const r = run(t, 50, 1);
      const n = waypointRequests(wp.status.podIP) - before;
      return r.completed > 0 && !r.non2xx && n >= r.completed ? n : undefined;
    });
    log(`${name}: the waypoint counted ${counted} of a check's requests`);
  }
  if (selPaths.includes('weft-waypoint-jwt-authz')) {
    // The policy is enforced, not merely present: without the token the same request is refused.
    const t = targets['weft-waypoint-jwt-authz'];
    const bare = httpLatency(LAB, t.pod, t.host, t.port, 20, 1, t.http!.authority);
    if (!bare.codes?.['403']) throw new Error(`weft-waypoint-jwt-authz: requests without a token were not refused (${JSON.stringify(bare.codes)})`);
    log(`weft-waypoint-jwt-authz: without the token, ${bare.codes['403']} requests refused with 403`);
  }
  /** Latency rounds run again per path because the machine stalled the generator. */
  const disturbed: Partial<Record<PathName, number>> = {};
  // One latency run of a path at a rate, with the CPU of the path's proxies at 1000 req/s.
  const latencyRun = async (name: PathName, t: Target, rate: number) => {
    log(`${name}: latency at ${rate} req/s`);
    const measured = rate === 1000 && (t.mesh || t.haproxy);
    const edge = t.haproxy ? haproxyPids() : agentPids();
    const l7 = measured ? (t.l7?.() ?? []) : [];
    const pids = [...edge, ...l7];
    // The agents' own CPU with no traffic (timers, xDS and, above all, the sampling profiler of
    // this run), measured just before and taken out: the figure is what the traffic costs.
    const attempt = async () => {
      const idle = measured ? await idleCpu(pids, IDLE_SECONDS) : pids.map(() => 0);
      const before = pids.map(cpuSeconds);
      const start = process.hrtime.bigint();
      const l = run(t, rate, SECONDS);
      return { idle, before, l, secs: Number(process.hrtime.bigint() - start) / 1e9 };
    };
    let got = await attempt();
    // A round the machine stalled (the generator itself late, report.ts LATE_P99_LIMIT_US) is run again.
    for (let redo = 0; stalledRound(got.l, !!t.http) && redo < MAX_REDO; redo++) {
      log(`  the generator itself was ${got.l.late_p99} µs late at p99: a stalled round, measured again`);
      disturbed[name] = (disturbed[name] ?? 0) + 1;
      await settle(0.1, 10);
      const again = await attempt();
      if (again.l.late_p99 < got.l.late_p99) got = again;
    }
    const { idle, before, l, secs } = got;
    if (l.lost > 0) log(`  ${l.lost} responses missing`);
    if (t.http && (l.non2xx || l.errors)) log(`  ${l.non2xx} responses not 2xx (${JSON.stringify(l.codes)}), ${l.errors} connection errors`);
    if (t.http) {
      const f = (failures[name] ??= { lost: 0, non2xx: 0, errors: 0 });
      f.lost += l.lost;
      f.non2xx += l.non2xx ?? 0;
      f.errors += l.errors;
      for (const [code, n] of Object.entries(l.codes ?? {})) (f.codes ??= {})[code] = (f.codes[code] ?? 0) + n;
    }
    if (!measured) return { l };
    // Both agents work on every request across nodes (one on same-node); charge the busier.
    // vCPU per 1000 req/s = CPU-seconds per 1000 requests; counted over the requests sent
    // (warm-up second included), so the load generator's start-up inside the pod is not.
    const sent = Math.round(rate * (SECONDS + 1));
    const used = pids.map((p, i) => cpuSeconds(p) - before[i]! - idle[i]! * secs);
    idleVcpu[name] = idle.map((x) => Math.round(x * 1000) / 1000);
    const perK = (cpu: number) => Math.round((cpu / (sent / 1000)) * 1000) / 1000;
    return {
      l,
      cpu: perK(Math.max(0, ...used.slice(0, edge.length))),
      rss: t.haproxy ? Math.max(...edge.map((p) => rssMb(p))) : undefined,
      // The L7 proxy: all its processes together (one, today, for both).
      l7cpu: l7.length ? perK(Math.max(0, used.slice(edge.length).reduce((a, b) => a + b, 0))) : undefined,
      l7rss: l7.length ? Math.round(l7.reduce((a, p) => a + rssMb(p), 0) * 10) / 10 : undefined,
      l7anon: l7.length ? Math.round(l7.reduce((a, p) => a + rssMb(p, 'RssAnon'), 0) * 10) / 10 : undefined,
    };
  };
  // HTTP paths: requests that failed in the latency runs, all rates and rounds together. A path
  // that falls behind its rate loses requests, and its percentiles are then queueing delay.
  const failures: Partial<Record<PathName, NonNullable<PathResult['http_failures']>>> = {};
  const first = new Map<PathName, Awaited<ReturnType<typeof latencyRun>>>();
  for (const [name, t] of Object.entries(targets) as [PathName, Target][]) {
    if (!selPaths.includes(name)) continue;
    const quiet = await settle(0.1, name === 'direct' ? 60 : 20);
    log(`${name}: machine ${Math.round(quiet.busy * 100)} % busy after ${quiet.waitedS} s of waiting; warm-up`);
    run(t, 200, 1); // connections, certificates and pools in place
    const tp = want('throughput') && !t.http ? (log(`${name}: throughput`), measureThroughput(LAB, t.pod, t.host, IPERF_SECONDS)) : undefined;
    const lat: PathResult['latency_us'] = {};
    for (const rate of want('latency') || want('cpu') ? RATES.concat(selRates.filter((x) => !RATES.includes(x))) : []) {
      if (!selRates.includes(rate) || (!want('latency') && rate !== 1000)) continue;
      // Verifying a JWT per request takes the waypoint (one event loop) near a whole core at 1000
      // req/s on this machine: at 2000 it only queues, for minutes, and the paths measured after
      // it would inherit the backlog. Its figures are at 500 and 1000.
      if (name === 'weft-waypoint-jwt-authz' && rate > 1000) continue;
      const r = await latencyRun(name, t, rate);
      lat[String(rate)] = { p50: r.l.p50, p90: r.l.p90, p99: r.l.p99, p999: r.l.p999 };
      if (rate === 1000) first.set(name, r);
    }
    results[name] = {
      throughput_gbps: tp?.gbps ?? NaN, latency_us: lat, conn_per_s: NaN,
      ...(tp ? { noise_pct: { throughput: tp.spreadPct } } : {}),
    };
  }
  // 1000 req/s, the rate the targets compare, a second time: every path again in reverse order,
  // so a disturbed stretch of the run weighs on no path alone. Figures are the mean of the two
  // rounds; their difference is each path's latency noise, and the direct path's (its rounds are
  // the run's first and last latency runs) the run's.
  const order = (Object.keys(targets) as PathName[]).filter((n) => selPaths.includes(n) && first.has(n));
  for (const name of [...order].reverse()) {
    await settle(0.1, 20);
    const a = first.get(name)!;
    const b = await latencyRun(name, targets[name], 1000);
    const mean = (x: number, y: number) => Math.round((x + y) / 2);
    const diff = (x: number, y: number) => Math.round((Math.abs(x - y) / ((x + y) / 2)) * 100);
    const res = results[name]!;
    res.latency_us['1000'] = { p50: mean(a.l.p50, b.l.p50), p90: mean(a.l.p90, b.l.p90), p99: mean(a.l.p99, b.l.p99), p999: mean(a.l.p999, b.l.p999) };
    res.noise_pct = { ...res.noise_pct, p50: diff(a.l.p50, b.l.p50), p99: diff(a.l.p99, b.l.p99) };
    // The load generator's own lateness in these runs (the worse round): part of every figure above.
    res.generator_late_us = { p50: Math.max(a.l.late_p50, b.l.late_p50), p99: Math.max(a.l.late_p99, b.l.late_p99) };
    if (disturbed[name]) res.disturbed_rounds = disturbed[name];
    if (a.cpu !== undefined && b.cpu !== undefined) res[targets[name].haproxy ? 'proxy_cpu_per_krps' : 'agent_cpu_per_krps'] = Math.round(((a.cpu + b.cpu) / 2) * 1000) / 1000;
    if (b.rss !== undefined) res.proxy_rss_mb = b.rss;
    if (a.l7cpu !== undefined && b.l7cpu !== undefined) res.l7_cpu_per_krps = Math.round(((a.l7cpu + b.l7cpu) / 2) * 1000) / 1000;
    if (a.l7rss !== undefined && b.l7rss !== undefined) res.l7_rss_mb = Math.max(a.l7rss, b.l7rss);
    if (a.l7anon !== undefined && b.l7anon !== undefined) res.l7_rss_anon_mb = Math.max(a.l7anon, b.l7anon);
    if (name === 'direct') noise = { p50Pct: res.noise_pct.p50!, p99Pct: res.noise_pct.p99! };
    log(`${name}: ${JSON.stringify(res)} (at 1000 req/s by round: p50 ${a.l.p50} / ${b.l.p50} µs, p99 ${a.l.p99} / ${b.l.p99} µs${a.cpu !== undefined ? `, vCPU ${a.cpu} / ${b.cpu}` : ''}${a.l7cpu !== undefined ? `, L7 proxy vCPU ${a.l7cpu} / ${b.l7cpu}` : ''})`);
  }
  for (const [name, f] of Object.entries(failures)) if (results[name as PathName]) results[name as PathName]!.http_failures = f;
  // New connections per second: a warm-up round, then two rounds, the second in reverse order,
  // averaged. Measured path after path, whichever mesh path came second was 10-20 % faster
  // whatever its capture (the agents are shared and their connection path still warming up),
  // which decided eBPF against iptables by order.
  if (want('connrate')) {
    const paths = (Object.keys(targets) as PathName[]).filter((n) => selPaths.includes(n) && !targets[n].http);
    for (const name of paths) connRate(LAB, targets[name].pod, targets[name].host, 7000, 3);
    const rates = new Map<PathName, number[]>(paths.map((n) => [n, []]));
    for (const round of [paths, [...paths].reverse()])
      for (const name of round) {
        log(`${name}: new connections`);
        rates.get(name)!.push(connRate(LAB, targets[name].pod, targets[name].host, 7000, 5));
      }
    for (const name of paths) {
      const r = rates.get(name)!;
      results[name]!.conn_per_s = Math.round(r.reduce((a, b) => a + b, 0) / r.length);
      results[name]!.noise_pct = { ...results[name]!.noise_pct, conn: Math.round((Math.abs(r[0]! - r[1]!) / results[name]!.conn_per_s) * 100) };
      log(`${name}: ${JSON.stringify(results[name])} (connections/s by round: ${r.join(', ')})`);
    }
  }
} finally {
  log('lab down');
  spawnSync(process.execPath, [join(root, 'bin/weft.js'), 'down', '--name', LAB], { stdio: 'ignore' });
}
// Memory: an agent of its own with SCALE_PODS enrolled pods, in a lab of its own, without the
// sampling profiler the lab above runs its agents under (its samples and the run's traffic are
// not what an operator's agent holds). Read once the pods are up and the node has been quiet
// for 35 s (the agent gives freed malloc pages back after 30 s without enrollments).
if (want('rss')) {
  const memLab = `${LAB}-mem`;
  log(`memory: ${SCALE_PODS} enrolled pods on node-0 of a lab without the profiler`);
  writeFileSync(join(dir, 'scale.yaml'), scalePods(SCALE_PODS));
  const env = { ...process.env };
  delete env.WEFT_AGENT_NODE_ARGS;
  delete env.WEFT_IMAGE_NODE_ARGS;
  spawnSync(process.execPath, [join(root, 'bin/weft.js'), 'down', '--name', memLab], { stdio: 'ignore' });
  try {
    const up = spawnSync(process.execPath, [join(root, 'bin/weft.js'), 'up', '--name', memLab, '--nodes', '1', '-f', join(dir, 'scale.yaml'), '--timeout', '300'], { encoding: 'utf8', env, timeout: 400_000 });
    if (up.status !== 0) throw new Error(`memory lab: weft up: exit ${up.status}\n${up.stderr}`);
    const running = () => (JSON.parse(weft(memLab, ['get', 'pods', '-n', 'bench-scale', '-o', 'json'])) as { items: PodJ[] }).items.filter((p) => p.status.phase === 'Running').length;
    const deadline = Date.now() + 300_000;
    while (running() < SCALE_PODS && Date.now() < deadline) await sleep(1000);
    await sleep(35_000);
    const pid = (JSON.parse(weft(memLab, ['get', 'nodes', '-o', 'json'])) as { items: { metadata: { annotations: Record<string, string> } }[] }).items.map((n) => Number(n.metadata.annotations['weft.dev/agent-pid']))[0]!;
    const rss = { agent_rss_mb: rssMb(pid), agent_rss_anon_mb: rssMb(pid, 'RssAnon'), agent_rss_file_mb: rssMb(pid, 'RssFile') };
    log(`memory: ${JSON.stringify(rss)} (${running()} pods running)`);
    for (const n of ['weft-ebpf', 'weft-iptables'] as const) if (results[n]) Object.assign(results[n]!, rss);
  } finally {
    spawnSync(process.execPath, [join(root, 'bin/weft.js'), 'down', '--name', memLab], { stdio: 'ignore' });
  }
}

// CPU time the hypervisor gave to other guests while the lab ran: a run on a busy host is slower.
const steal = stealPct(ticks0, machineTicks());
// Calibration, after the lab is gone: what one plain relay hop (no TLS, no HTTP/2) costs a C proxy
// and a Node relay on this machine, per 1000 req/s (bench/tools/relay-floor.ts, on loopback).
let floor: Record<string, number> | undefined;
if (want('cpu')) {
  log('calibration: plain relay hops on loopback');
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench/tools/relay-floor.ts')], { encoding: 'utf8', timeout: 120_000 });
  try {
    floor = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, number>;
  } catch {
    log(`calibration failed: ${r.stderr.slice(-300)}`);
  }
}

if (!FULL) {
  // A subset: what was measured, and the ratios it allows; nothing under bench/results.
  const r = (a: number, b: number) => Math.round((a / b) * 100) / 100;
  const lat = (p: PathName, q: 'p50' | 'p99') => results[p]?.latency_us['1000']?.[q];
  const added = (p: PathName, q: 'p50' | 'p99', base: PathName = 'direct') => {
    const a = lat(p, q);
    const b = lat(base, q);
    return a !== undefined && b !== undefined ? a - b : undefined;
  };
  const wp = results['weft-waypoint'];
  const hh = results['haproxy-http'];
  const e = results['weft-ebpf'];
  const h = results['haproxy-mtls'];
  const ipt = results['weft-iptables'];
  const ratios = {
    weft_over_haproxy_throughput: e && h ? r(e.throughput_gbps, h.throughput_gbps) : undefined,
    added_latency_1000_us: { 'weft-ebpf': { p50: added('weft-ebpf', 'p50'), p99: added('weft-ebpf', 'p99') }, 'haproxy-mtls': { p50: added('haproxy-mtls', 'p50'), p99: added('haproxy-mtls', 'p99') } },
    ebpf_over_iptables_conn_per_s: e && ipt ? r(e.conn_per_s, ipt.conn_per_s) : undefined,
    cpu_per_krps: Object.fromEntries(Object.entries(results).filter(([, x]) => (x.agent_cpu_per_krps ?? x.proxy_cpu_per_krps) !== undefined).map(([k, x]) => [k, x.agent_cpu_per_krps ?? x.proxy_cpu_per_krps])),
    l7_added_latency_1000_us: {
      'weft-waypoint over weft-ebpf-http': { p50: added('weft-waypoint', 'p50', 'weft-ebpf-http'), p99: added('weft-waypoint', 'p99', 'weft-ebpf-http') },
      'haproxy-http over haproxy-mtls-http': { p50: added('haproxy-http', 'p50', 'haproxy-mtls-http'), p99: added('haproxy-http', 'p99', 'haproxy-mtls-http') },
    },
    l7_cpu_per_krps: { waypoint: wp?.l7_cpu_per_krps, waypoint_jwt_authz: results['weft-waypoint-jwt-authz']?.l7_cpu_per_krps, haproxy: hh?.l7_cpu_per_krps },
    l7_rss_mb: { waypoint: wp?.l7_rss_mb, haproxy: hh?.l7_rss_mb },
  };
  const hot = PROFILE ? hotFunctions(profDir, 25) : [];
  const wpHot = PROFILE ? hotFunctions(wpProfDir, 30) : [];
  const wpFiles = PROFILE ? hotFunctions(wpProfDir, 20, true) : [];
  const wpParts = PROFILE ? profileParts(wpProfDir) : [];
  if (process.env.BENCH_KEEP_PROFILES) for (const d of [profDir, wpProfDir]) cpSync(d, join(process.env.BENCH_KEEP_PROFILES, d === profDir ? 'agents' : 'waypoint'), { recursive: true });
  rmSync(wpProfDir, { recursive: true, force: true });
  const out = { subset: { paths: selPaths, figures: selFigures, rates: selRates }, machine, seconds_per_latency_run: SECONDS, duration_s: Math.round((Date.now() - t0) / 1000), steal_pct: steal, noise_pct: noise, paths: results, agent_idle_vcpu: idleVcpu, relay_floor: floor, ratios, agent_profile_top: hot, waypoint_profile_parts: wpParts, waypoint_profile_top: wpHot, waypoint_profile_files: wpFiles };
  writeFileSync(join(dir, 'subset.json'), JSON.stringify(out, null, 2) + '\n');
  console.log(JSON.stringify(out.paths, null, 1));
  console.log(JSON.stringify(ratios, null, 1));
  console.log(generatorFloor(results));
  const httpOnly = Object.fromEntries(Object.entries(results).filter(([k]) => HTTP_PATHS.includes(k as PathName))) as typeof results;
  if (Object.keys(httpOnly).length) console.log(httpTable(httpOnly));
  for (const x of hot) console.log(`  ${x.selfPct} % ${x.fn}`);
  if (wpParts.length) console.log('waypoint, by part of the work:');
  for (const x of wpParts) console.log(`  ${x.selfPct} % ${x.part}`);
  if (wpHot.length) console.log('waypoint, by function:');
  for (const x of wpHot) console.log(`  ${x.selfPct} % ${x.fn}`);
  if (wpFiles.length) console.log('waypoint, by file:');
  for (const x of wpFiles) console.log(`  ${x.selfPct} % ${x.fn}`);
  log(`subset results in ${join(dir, 'subset.json')} (not recorded in bench/results or BENCHMARKS.md)`);
  process.exit(0);
}

const r = (a: number, b: number) => Math.round((a / b) * 100) / 100;
const d = results.direct!;
const e = results['weft-ebpf']!;
const h = results['haproxy-mtls']!;
const added = (p: PathResult, q: 'p50' | 'p99', base: PathResult = d) => p.latency_us['1000']![q] - base.latency_us['1000']![q];
// The L7 hops: each proxy's path against its own L4 path (setup.ts).
const wp = results['weft-waypoint']!;
const wpL4 = results['weft-ebpf-http']!;
const hh = results['haproxy-http']!;
const hhL4 = results['haproxy-mtls-http']!;
const l7Added = (q: 'p50' | 'p99') => ({ waypoint: added(wp, q, wpL4), haproxy: added(hh, q, hhL4) });
const ratios = {
  weft_over_direct_throughput: r(e.throughput_gbps, d.throughput_gbps),
  weft_over_haproxy_throughput: r(e.throughput_gbps, h.throughput_gbps),
  added_latency_1000_us: { 'weft-ebpf': { p50: added(e, 'p50'), p99: added(e, 'p99') }, 'haproxy-mtls': { p50: added(h, 'p50'), p99: added(h, 'p99') } },
  ebpf_over_iptables_conn_per_s: r(e.conn_per_s, results['weft-iptables']!.conn_per_s),
  l7_added_latency_1000_us: { p50: l7Added('p50'), p99: l7Added('p99') },
  waypoint_over_haproxy_l7_cpu: r(wp.l7_cpu_per_krps ?? NaN, hh.l7_cpu_per_krps ?? NaN),
  // What verifying a JWT and evaluating an L7 AuthorizationPolicy per request costs the waypoint.
  waypoint_jwt_authz_over_plain_l7_cpu: r(results['weft-waypoint-jwt-authz']?.l7_cpu_per_krps ?? NaN, wp.l7_cpu_per_krps ?? NaN),
};
// Issue #18's targets: ahead of the HAProxy mutual-TLS pair on every figure, on a load generator
// whose own floor is small and shown (the direct path).
const fl = d.latency_us['1000']!;
const targets = [
  { target: 'load generator floor: direct p50 < 60 µs and p99 < 500 µs at 1000 req/s', met: fl.p50 < 60 && fl.p99 < 500, value: `p50 ${fl.p50} µs, p99 ${fl.p99} µs (the generator's own lateness: p50 ${d.generator_late_us?.p50} µs, p99 ${d.generator_late_us?.p99} µs)` },
  { target: 'weft-ebpf throughput ≥ 1.5 × haproxy-mtls', met: ratios.weft_over_haproxy_throughput >= 1.5, value: `${ratios.weft_over_haproxy_throughput} ×` },
  { target: 'latency added at 1000 req/s, p50 ≤ 0.8 × haproxy-mtls\'s', met: added(e, 'p50') <= 0.8 * added(h, 'p50'), value: `${added(e, 'p50')} µs vs ${added(h, 'p50')} µs` },
  { target: 'latency added at 1000 req/s, p99 ≤ 0.8 × haproxy-mtls\'s', met: added(e, 'p99') <= 0.8 * added(h, 'p99'), value: `${added(e, 'p99')} µs vs ${added(h, 'p99')} µs` },
  { target: 'agent ≤ 0.04 vCPU per 1000 req/s', met: (e.agent_cpu_per_krps ?? 9) <= 0.04, value: `${e.agent_cpu_per_krps} vCPU (HAProxy, busier instance: ${h.proxy_cpu_per_krps} vCPU)` },
  { target: 'new connections/s ≥ 0.5 × direct and ≥ 2 × haproxy-mtls', met: e.conn_per_s >= 0.5 * d.conn_per_s && e.conn_per_s >= 2 * h.conn_per_s, value: `${e.conn_per_s} vs direct ${d.conn_per_s} (${r(e.conn_per_s, d.conn_per_s)} ×) and HAProxy ${h.conn_per_s} (${r(e.conn_per_s, h.conn_per_s)} ×)` },
  { target: `agent ≤ 60 MB RSS with ${SCALE_PODS} enrolled pods, ≤ 30 MB of it anonymous`, met: (e.agent_rss_mb ?? 999) <= 60 && (e.agent_rss_anon_mb ?? 999) <= 30, value: `${e.agent_rss_mb} MB (anonymous ${e.agent_rss_anon_mb} MB, file pages ${e.agent_rss_file_mb} MB)` },
  { target: 'weft-ebpf beats weft-iptables on new connections/s', met: ratios.ebpf_over_iptables_conn_per_s > 1, value: `${ratios.ebpf_over_iptables_conn_per_s} ×` },
  // Envoy's published waypoint figures: 0.25 vCPU and 60 MB at 1000 requests/s.
  { target: 'waypoint ≤ 0.25 vCPU per 1000 req/s', met: (wp.l7_cpu_per_krps ?? 9) <= 0.25, value: `${wp.l7_cpu_per_krps} vCPU (HAProxy's L7 proxy: ${hh.l7_cpu_per_krps} vCPU)` },
  { target: 'waypoint ≤ 60 MB RSS', met: (wp.l7_rss_mb ?? 999) <= 60, value: `${wp.l7_rss_mb} MB (HAProxy's L7 proxy: ${hh.l7_rss_mb} MB)` },
  { target: 'waypoint adds over the L4 mesh, p50 at 1000 req/s ≤ HAProxy\'s L7 hop', met: l7Added('p50').waypoint <= l7Added('p50').haproxy, value: `${l7Added('p50').waypoint} µs vs ${l7Added('p50').haproxy} µs (failed requests, all rates: weft-waypoint ${(wp.http_failures?.lost ?? 0) + (wp.http_failures?.non2xx ?? 0)}, haproxy-http ${(hh.http_failures?.lost ?? 0) + (hh.http_failures?.non2xx ?? 0)})` },
  { target: 'waypoint adds over the L4 mesh, p99 at 1000 req/s ≤ HAProxy\'s L7 hop', met: l7Added('p99').waypoint <= l7Added('p99').haproxy, value: `${l7Added('p99').waypoint} µs vs ${l7Added('p99').haproxy} µs` },
];
const hot = hotFunctions(profDir);
const wpHot = hotFunctions(wpProfDir, 20);
const wpFiles = hotFunctions(wpProfDir, 15, true);
const wpParts = profileParts(wpProfDir);
rmSync(wpProfDir, { recursive: true, force: true });
const runAt = new Date().toISOString();
const stamp = runAt.replace(/[:.]/g, '-');
// The previous recorded run, read before it is overwritten: repeated runs should agree within the noise.
const latestJson = join(root, 'bench/results/latest.json');
const previous = existsSync(latestJson) ? (JSON.parse(readFileSync(latestJson, 'utf8')) as RunSummary & { run_at?: string }) : undefined;
const out = { run_at: runAt, machine, command: 'make bench', seconds_per_latency_run: SECONDS, duration_s: Math.round((Date.now() - t0) / 1000), steal_pct: steal, noise_pct: noise, paths: results, agent_idle_vcpu: idleVcpu, relay_floor: floor, ratios, targets, agent_profile_top: hot, waypoint_profile_parts: wpParts, waypoint_profile_top: wpHot, waypoint_profile_files: wpFiles };
mkdirSync(join(root, 'bench/results'), { recursive: true });
writeFileSync(join(root, `bench/results/${stamp}.json`), JSON.stringify(out, null, 2) + '\n');
writeFileSync(latestJson, JSON.stringify(out, null, 2) + '\n');
writeRecordedRun(root, out, previous);
rmSync(dir, { recursive: true, force: true }); // pod manifests and profiles: all recorded above
