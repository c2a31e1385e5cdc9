// Control-plane scale: 10,000 workloads, 1,000 services and 500 policies; the control plane's
// memory, a new agent's first full sync, and how long one pod change takes to reach 100 connected
// agents (Delta ADS clients, the agents' own xDS client code).
//   node --import tsx bench/control-scale.ts   (BENCH_SCALE_NS=100 namespaces of 100 pods)
// The configuration comes, in turn, from a directory of YAML (what the lab uses), one file per
// namespace, a change rewriting its namespace's file; and from the Kubernetes API: the fake API
// server the tests use (list and watch), in this process, a change being one watch event.
// BENCH_SCALE_SOURCE=dir or =kube runs only one of them.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { stringify } from 'yaml';
import { DeltaXdsClient } from '../src/agent/xds/delta-client.ts';
import { KUBE_RESOURCES } from '../src/control/config/kube-api.ts';
import { CONTROL_PLANE_ENV } from '../src/api/process-env.ts';
import { FakeApiServer, type FakeObject } from '../test/control/config/fake-apiserver.ts';

const NS = Number(process.env.BENCH_SCALE_NS ?? 100);
const PODS = 100;
const SVCS = 10;
const POLICIES = 5;
const AGENTS = Number(process.env.BENCH_SCALE_AGENTS ?? 100);
type Source = 'dir' | 'kube';
const SOURCES: Source[] = process.env.BENCH_SCALE_SOURCE === 'kube' ? ['kube'] : process.env.BENCH_SCALE_SOURCE === 'dir' ? ['dir'] : ['dir', 'kube'];
const log = pino({ level: 'silent' });
const say = (s: string) => console.log(`[scale] ${s}`);

function nsObjects(n: number, readyFlip = -1): unknown[] {
  const ns = `team-${n}`;
  const out: unknown[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { 'istio.io/dataplane-mode': 'ambient' } } }];
  for (let s = 0; s < SVCS; s++)
    out.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${s}`, namespace: ns }, spec: { clusterIP: `10.96.${n}.${s + 1}`, selector: { app: `svc-${s}` }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  for (let p = 0; p < PODS; p++) {
    const ready = p === readyFlip ? 'False' : 'True';
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `pod-${p}`, namespace: ns, labels: { app: `svc-${p % SVCS}` }, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
      spec: { nodeName: `node-${p % 50}`, containers: [{ name: 'app', image: 'app', ports: [{ containerPort: 8080 }] }] },
      status: { phase: 'Running', podIP: `10.${100 + Math.floor(n / 2)}.${(n % 2) * 128 + Math.floor(p / 2)}.${(p % 2) + 2}`, conditions: [{ type: 'Ready', status: ready }] },
    });
  }
  for (let a = 0; a < POLICIES; a++)
    out.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: `allow-${a}`, namespace: ns },
      spec: { selector: { matchLabels: { app: `svc-${a}` } }, action: 'ALLOW', rules: [{ from: [{ source: { namespaces: [ns, `team-${(n + 1) % NS}`] } }], to: [{ operation: { ports: ['8080'] } }] }] },
    });
  return out;
}

const nsYaml = (n: number, readyFlip = -1) => nsObjects(n, readyFlip).map((o) => stringify(o)).join('---\n');

interface Result {
  workloads: number;
  services: number;
  policies: number;
  agents: number;
  source: Source;
  control_rss_mb: number;
  control_rss_after_sync_mb: number;
  model_build_mean_ms: number;
  first_sync_ms: number;
  change_to_all_agents_ms: { median: number; max: number; debounce_ms: number };
}

async function run(SOURCE: Source): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-scale-'));
  const cfg = join(dir, 'config');
  const writeNs = (n: number, text: string) => writeFileSync(join(cfg, `team-${n}.yaml`), text);
  let api: FakeApiServer | undefined;
  let cp: ChildProcess | undefined;
  try {
    writeFileSync(join(dir, 'tokens.json'), '{}');
    let sourceArgs: string[];
    if (SOURCE === 'dir') {
      mkdirSync(cfg);
      for (let n = 0; n < NS; n++) writeNs(n, nsYaml(n));
      sourceArgs = ['--config-dir', cfg];
    } else {
      api = await FakeApiServer.start();
      for (const r of KUBE_RESOURCES) api.serve(r);
      api.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' }); // istio-ca-root-cert
      api.serve({ kind: 'Secret', apiVersion: 'v1', plural: 'secrets' }); // istio-ca-secret, the self-signed root
      api.serve({ kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases' }); // leader election
      api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'istio-system' } } as FakeObject); // where those live
      for (let n = 0; n < NS; n++) for (const o of nsObjects(n)) api.apply(o as FakeObject);
      sourceArgs = ['--kubeconfig', api.writeKubeconfig(dir)];
    }
    say(`${NS * PODS} pods, ${NS * SVCS} services, ${NS * POLICIES} policies from ${SOURCE === 'dir' ? cfg : `the Kubernetes API (fake, ${api!.url})`}`);

    /** One pod's readiness flipped, prepared before the clock starts; the function returned is the change itself. */
    const podChange = (ready: boolean): (() => void) => {
      if (SOURCE === 'dir') {
        const text = nsYaml(7, ready ? -1 : 3);
        return () => writeNs(7, text);
      }
      const pod = (nsObjects(7, ready ? -1 : 3) as FakeObject[]).find((o) => o.kind === 'Pod' && o.metadata.name === 'pod-3')!;
      return () => api!.apply(pod);
    };

    const port = 31000 + Math.floor(Math.random() * 20000);
    const t0 = Date.now();
    // BENCH_CONTROL_NODE_ARGS: extra node flags for the control plane, e.g. --cpu-prof.
    const nodeArgs = (process.env.BENCH_CONTROL_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const control = (cp = spawn(process.execPath, [...nodeArgs, join(import.meta.dirname, '..', 'bin/weft.js'), 'control', ...sourceArgs, '--node-tokens', join(dir, 'tokens.json'), '--plain-address', `127.0.0.1:${port}`, '--tls-address', `127.0.0.1:${port + 1}`, '--metrics-address', `127.0.0.1:${port + 2}`], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...CONTROL_PLANE_ENV } }));
    let out = '';
    control.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const rss = () => Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${control.pid}/status`, 'utf8'))![1]) / 1024);
    /** weft_control_model_build_seconds: snapshot -> deltas written to every stream. */
    async function buildStats(): Promise<{ sum: number; count: number }> {
      const text = await (await fetch(`http://127.0.0.1:${port + 2}/metrics`)).text();
      const v = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
      return { sum: v('weft_control_model_build_seconds_sum'), count: v('weft_control_model_build_seconds_count') };
    }
    /** The control plane's own view of its memory (prom-client's process metrics), in MB. */
    async function heap(): Promise<string> {
      const text = await (await fetch(`http://127.0.0.1:${port + 2}/metrics`)).text();
      const mb = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20);
      return `V8 heap ${mb('nodejs_heap_size_used_bytes')} MB used of ${mb('nodejs_heap_size_total_bytes')} MB, external ${mb('nodejs_external_memory_bytes')} MB`;
    }
    while (!out.includes('control plane ready')) {
      if (Date.now() - t0 > 120_000) throw new Error('control plane did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    say(`control plane ready in ${Date.now() - t0} ms, RSS ${rss()} MB; ${await heap()}`);
    const client = (i: number) => new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: `node-${i}`, log });
    const first = client(0);
    const s0 = process.hrtime.bigint();
    first.start();
    await first.whenSynced();
    const firstSyncMs = Number(process.hrtime.bigint() - s0) / 1e6;
    say(`first full sync of a new agent: ${firstSyncMs.toFixed(0)} ms (${first.state.workloads.size} workloads, ${first.state.services.size} services, ${first.state.policies.size} policies)`);
    const agents = [first, ...Array.from({ length: AGENTS - 1 }, (_, i) => client(i + 1))];
    const a0 = Date.now();
    for (const a of agents.slice(1)) a.start();
    await Promise.all(agents.map((a) => a.whenSynced()));
    const peakRss = rss();
    say(`${AGENTS} agents synced in ${Date.now() - a0} ms; control plane RSS ${peakRss} MB; ${await heap()}`);
    const uid = 'Kubernetes//Pod/team-7/pod-3';
    const samples: number[] = [];
    const buildsBefore = await buildStats();
    for (let round = 0; round < 5; round++) {
      const want = round % 2 === 0 ? 'UNHEALTHY' : 'HEALTHY';
      const change = podChange(want === 'HEALTHY'); // the bench's own work, not timed
      const start = process.hrtime.bigint();
      change();
      const seen = agents.map(() => 0);
      await new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error('change did not reach every agent in 30 s')), 30_000);
        const check = () => {
          agents.forEach((a, i) => {
            if (!seen[i] && a.state.workloads.get(uid)?.status === want) seen[i] = Number(process.hrtime.bigint() - start) / 1e6;
          });
          if (seen.every(Boolean)) {
            clearTimeout(deadline);
            resolve();
          } else setTimeout(check, 1);
        };
        check();
      });
      samples.push(Math.max(...seen));
      await new Promise((r) => setTimeout(r, 300));
    }
    const buildsAfter = await buildStats();
    const buildMs = ((buildsAfter.sum - buildsBefore.sum) / Math.max(1, buildsAfter.count - buildsBefore.count)) * 1000;
    say(`control plane: ${buildsAfter.count - buildsBefore.count} builds, mean ${buildMs.toFixed(1)} ms from snapshot to deltas written`);
    const sorted = [...samples].sort((a, b) => a - b);
    const result = {
      workloads: NS * PODS,
      services: NS * SVCS,
      policies: NS * POLICIES,
      agents: AGENTS,
      source: SOURCE,
      // The larger of: right after 100 agents synced at once, and at the end.
      control_rss_mb: Math.max(peakRss, rss()),
      control_rss_after_sync_mb: peakRss,
      model_build_mean_ms: Number(buildMs.toFixed(1)),
      first_sync_ms: Math.round(firstSyncMs),
      change_to_all_agents_ms: { median: Math.round(sorted[2]!), max: Math.round(sorted[4]!), debounce_ms: 100 },
    };
    say(JSON.stringify(result));
    for (const a of agents) a.close();
    return result;
  } finally {
    if (cp) {
      const c = cp;
      c.kill('SIGTERM');
      await new Promise((r) => (c.exitCode !== null ? r(undefined) : c.once('exit', r)));
    }
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Result[] = [];
for (const source of SOURCES) results.push(await run(source));
mkdirSync(join(import.meta.dirname, 'results'), { recursive: true });
writeFileSync(join(import.meta.dirname, 'results', 'control-scale.json'), JSON.stringify(results, null, 2) + '\n');
const SOURCE_NAMES: Record<Source, string> = { dir: 'directory of YAML', kube: 'Kubernetes API' };
const over = (r: Result) => r.change_to_all_agents_ms.max - r.change_to_all_agents_ms.debounce_ms;
const md = [
  `Run: ${new Date().toISOString().slice(0, 16)}Z, \`node --import tsx bench/control-scale.ts\` (part of \`make bench\`). Sources: a directory of YAML, one file per namespace (a change rewrites one file); the Kubernetes API (list/watch against the fake API server the tests use; a change is one watch event).`,
  '',
  '| source | workloads | services | policies | agents | control-plane RSS (max) | first full sync (new agent) | one pod change → all agents (median / max, incl. 100 ms debounce) | of which control-plane build (mean) |',
  '|---|---|---|---|---|---|---|---|---|',
  ...results.map((r) => `| ${SOURCE_NAMES[r.source]} | ${r.workloads} | ${r.services} | ${r.policies} | ${r.agents} | ${r.control_rss_mb} MB | ${r.first_sync_ms} ms | ${r.change_to_all_agents_ms.median} / ${r.change_to_all_agents_ms.max} ms | ${r.model_build_mean_ms} ms |`),
  '',
  "RSS is the larger of two readings: right after 100 agents synced at once, and at the end. The change is timed from the file write or the API write to the last agent holding it (5 rounds); the build is the control plane's own histogram (`weft_control_model_build_seconds`: snapshot → deltas written to every stream). The 100 agents are the agent's own xDS client, all in the bench process.",
  '',
  ...results.map((r) => `Targets (${SOURCE_NAMES[r.source]}): RSS ≤ 300 MB — ${r.control_rss_mb <= 300 ? 'met' : '**missed**'}; a change reaches all agents ≤ 150 ms after the debounce — ${over(r) <= 150 ? `met (${over(r)} ms after it, worst of 5)` : `**missed** (${over(r)} ms after it, worst of 5)`}.`),
].join('\n');
const bm = join(import.meta.dirname, '..', 'BENCHMARKS.md');
const text = readFileSync(bm, 'utf8');
const b = '<!-- scale:begin -->';
const e = '<!-- scale:end -->';
writeFileSync(bm, text.slice(0, text.indexOf(b) + b.length) + '\n' + md + '\n' + text.slice(text.indexOf(e)));
