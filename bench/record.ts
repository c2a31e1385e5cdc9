// Writes a recorded `make bench` run (the JSON bench/run.ts saves in bench/results) into
// bench/results/latest.md, the charts and BENCHMARKS.md's results section. A saved run can be
// rendered again: `node --import tsx bench/record.ts bench/results/<run>.json [previous.json]`.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repeatabilityTable, type Noise, type RunSummary } from './compare.ts';
import { httpTable, LATE_P99_LIMIT_US, latencyChart, markdownTable, MAX_REDO, type PathResult } from './report.ts';
import { HTTP_PATHS, type PathName } from './setup.ts';

/** What bench/run.ts saves of a full run. */
export interface RecordedRun {
  run_at: string;
  machine: { cpu: string; cores: number; kernel: string; node: string };
  seconds_per_latency_run: number;
  duration_s: number;
  steal_pct: number;
  noise_pct: Noise;
  paths: Partial<Record<PathName, PathResult>>;
  agent_idle_vcpu: Record<string, number[]>;
  relay_floor?: Record<string, number>;
  ratios: Record<string, unknown> & { weft_over_direct_throughput: number; weft_over_haproxy_throughput: number };
  targets: { target: string; met: boolean; value: string }[];
  agent_profile_top: { selfPct: number; fn: string }[];
  waypoint_profile_parts: { selfPct: number; part: string }[];
  waypoint_profile_top: { selfPct: number; fn: string }[];
  waypoint_profile_files: { selfPct: number; fn: string }[];
}

/** The agents' idle CPU is measured for this long before each CPU figure (bench/run.ts). */
export const IDLE_SECONDS = 4;

/** The load generator's floor, which every run reports: the direct path, and the generator's own lateness. */
export function generatorFloor(results: RecordedRun['paths']): string {
  const d = results.direct?.latency_us['1000'];
  if (!d) return 'Load generator floor: not measured (no direct path in this run).';
  const late = Object.entries(results).filter(([, r]) => r.generator_late_us);
  const worst = late.reduce<[string, { p50: number; p99: number }] | undefined>((w, [k, r]) => (!w || r.generator_late_us!.p99 > w[1].p99 ? [k, r.generator_late_us!] : w), undefined);
  const dl = results.direct?.generator_late_us;
  const redone = Object.entries(results).filter(([, r]) => r.disturbed_rounds).map(([k, r]) => `${k} ${r.disturbed_rounds}`);
  const stalls = ` Latency rounds of TCP paths in which the generator itself was over ${LATE_P99_LIMIT_US} µs late at p99 (the machine stalled it) are run again, up to ${MAX_REDO} times: ${redone.length ? redone.join(', ') : 'none this run'}.`;
  return `Load generator floor (\`bench/tools/weft-load.c\`; the direct path at 1000 req/s, nothing between client and server but the two nodes): p50 ${d.p50} µs, p99 ${d.p99} µs.${dl ? ` Its own lateness there (each request sent after its due time, counted in the latency): p50 ${dl.p50} µs, p99 ${dl.p99} µs${worst ? `; on the worst path (${worst[0]}) p50 ${worst[1].p50} µs, p99 ${worst[1].p99} µs` : ''}.` : ''}${stalls}`;
}

export function writeRecordedRun(root: string, out: RecordedRun, previous?: RunSummary & { run_at?: string }): void {
  const results = out.paths;
  const { ratios, targets, machine } = out;
  const SECONDS = out.seconds_per_latency_run;
  const steal = out.steal_pct;
  const floor = out.relay_floor;
  const idleVcpu = out.agent_idle_vcpu;
  const hot = out.agent_profile_top;
  const wpParts = out.waypoint_profile_parts;
  const wpHot = out.waypoint_profile_top;
  const wpFiles = out.waypoint_profile_files;
  const d = results.direct!;
  const e = results['weft-ebpf']!;
  const h = results['haproxy-mtls']!;
  const added = (p: PathResult, q: 'p50' | 'p99', base: PathResult = d) => p.latency_us['1000']![q] - base.latency_us['1000']![q];
  const l7Added = (q: 'p50' | 'p99') => ({ waypoint: added(results['weft-waypoint']!, q, results['weft-ebpf-http']!), haproxy: added(results['haproxy-http']!, q, results['haproxy-mtls-http']!) });
  const tcpResults = Object.fromEntries(Object.entries(results).filter(([k]) => !HTTP_PATHS.includes(k as PathName))) as typeof results;
  const httpResults = Object.fromEntries(Object.entries(results).filter(([k]) => HTTP_PATHS.includes(k as PathName))) as typeof results;
  writeFileSync(join(root, 'bench/results/latency.svg'), latencyChart(tcpResults));
  writeFileSync(join(root, 'bench/results/latency-http.svg'), latencyChart(httpResults, 'HTTP/1.1 request latency by rate (1 KB POST, 1 KB response, 8 kept-alive connections): p50 solid, p99 dashed'));

  const md = [
    `Machine: ${machine.cpu}, ${machine.cores} cores, Linux ${machine.kernel}, Node ${machine.node}. Run: ${out.run_at.slice(0, 16)}Z, ${out.duration_s} s, latency runs of ${SECONDS} s; the hypervisor took ${steal} % of the CPU time (steal) while the lab ran.`,
    '',
    generatorFloor(results),
    '',
    markdownTable(tcpResults),
    '',
    '![latency by rate](bench/results/latency.svg)',
    '',
    'HTTP/1.1 paths (the waypoint\'s L7 hop and HAProxy\'s; L7 proxy figures at 1000 req/s, CPU after its idle CPU is taken out as for the agents):',
    '',
    httpTable(httpResults),
    '',
    '![HTTP latency by rate](bench/results/latency-http.svg)',
    '',
    `Added by the L7 hop at 1000 req/s, each path against its own L4 path: weft-waypoint − weft-ebpf-http p50 ${l7Added('p50').waypoint} µs, p99 ${l7Added('p99').waypoint} µs; haproxy-http − haproxy-mtls-http p50 ${l7Added('p50').haproxy} µs, p99 ${l7Added('p99').haproxy} µs.`,
    '',
    `Ratios: weft-ebpf/direct throughput ${ratios.weft_over_direct_throughput}, weft-ebpf/haproxy-mtls throughput ${ratios.weft_over_haproxy_throughput}; latency added over direct at 1000 req/s: weft-ebpf p50 ${added(e, 'p50')} µs, p99 ${added(e, 'p99')} µs; haproxy-mtls p50 ${added(h, 'p50')} µs, p99 ${added(h, 'p99')} µs. Latency at 1000 req/s and CPU are the mean of two rounds (all paths, then all again in reverse order). Noise within this run, each path by its own spread, in percent: p50 / p99 (the two 1000 req/s rounds), throughput (iperf's 1-second intervals, (max − min) / median), new connections/s (the two rounds): ${Object.entries(results).map(([k, v]) => `${k} ${v.noise_pct?.p50 ?? '—'} / ${v.noise_pct?.p99 ?? '—'}, ${v.noise_pct?.throughput ?? '—'}, ${v.noise_pct?.conn ?? '—'}`).join('; ')}. Compare ratios within one run: the machine is shared, and its speed moves between runs.`,
    '',
    `Agent CPU is what the 1000 req/s traffic costs the busier agent: CPU-seconds per 1000 requests, after taking out the agents' idle CPU measured for ${IDLE_SECONDS} s just before (agents run under a 10 ms sampling profiler; idle vCPU per agent, and last the L7 proxy where a path has one: ${Object.entries(idleVcpu).map(([k, v]) => `${k} ${v.join(' / ')}`).join(', ')}). HAProxy's figure is measured the same way on its busier instance, for scale: it is what a C proxy doing the same TLS relay costs on this machine (its RSS: ${h.proxy_rss_mb} MB per instance). The L7 proxies (the waypoint, HAProxy in mode http) are measured the same way, all their processes together.${floor ? ` Without TLS, one plain relay hop at 1000 req/s costs HAProxy (one thread) ${floor.haproxy_relay_cpu_per_krps} vCPU and a Node relay (the agent's forward(), both ways) ${floor.node_relay_cpu_per_krps} vCPU per 1000 req/s here (\`bench/tools/relay-floor.ts\`, loopback).` : ''}`,
    '',
    '| target | met | measured |',
    '|---|---|---|',
    ...targets.map((t) => `| ${t.target} | ${t.met ? 'yes' : '**no**'} | ${t.value} |`),
    '',
    ...(previous ? [repeatabilityTable(previous, previous.run_at ?? 'the previous recorded run', out), ''] : []),
    'Agent profile (self time, both agents, whole run):',
    '',
    ...hot.map((x) => `- ${x.selfPct} % ${x.fn}`),
    '',
    'Waypoint profile (self time, whole run): by part of the work (share of all busy samples), then by source file and by function (share of the samples with a JavaScript frame or GC, without the native part):',
    '',
    ...wpParts.map((x) => `- ${x.selfPct} % ${x.part}`),
    '',
    ...wpFiles.map((x) => `- ${x.selfPct} % ${x.fn}`),
    '',
    ...wpHot.map((x) => `- ${x.selfPct} % ${x.fn}`),
  ].join('\n');
  writeFileSync(join(root, 'bench/results/latest.md'), md + '\n');
  const bm = join(root, 'BENCHMARKS.md');
  const text = readFileSync(bm, 'utf8');
  const begin = '<!-- results:begin -->';
  const end = '<!-- results:end -->';
  writeFileSync(bm, text.slice(0, text.indexOf(begin) + begin.length) + '\n' + md + '\n' + text.slice(text.indexOf(end)));
  console.log(md);
}

if (process.argv[1]?.endsWith('bench/record.ts')) {
  const [file, prev] = process.argv.slice(2);
  if (!file) throw new Error('usage: record.ts RUN.json [PREVIOUS.json]');
  const read = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as RecordedRun;
  writeRecordedRun(join(import.meta.dirname, '..'), read(file), prev ? (read(prev) as unknown as RunSummary & { run_at?: string }) : undefined);
}
