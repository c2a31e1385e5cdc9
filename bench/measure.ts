// Running the measurement tools inside lab pods and reading agent CPU and memory from /proc.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WEFT_LOAD } from './setup.ts';

const BIN = join(import.meta.dirname, '..', 'bin', 'weft.js');

export function weft(lab: string, args: string[], timeoutMs = 300_000): string {
  const r = spawnSync(process.execPath, [BIN, args[0]!, '--name', lab, ...args.slice(1)], { encoding: 'utf8', timeout: timeoutMs, cwd: join(import.meta.dirname, '..') });
  if (r.status !== 0) throw new Error(`weft ${args.join(' ')}: exit ${r.status}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function execJson<T>(lab: string, pod: string, argv: string[], timeoutMs = 120_000): T {
  const out = weft(lab, ['exec', pod, '--', ...argv], timeoutMs).trim().split('\n');
  return JSON.parse(out.at(-1)!) as T;
}

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  completed: number;
  lost: number;
  errors: number;
  /** How late the load generator sent its requests (after their due times): its own floor, µs. */
  late_p50: number;
  late_p99: number;
  /** HTTP paths: responses other than 2xx. */
  non2xx?: number;
  codes?: Record<string, number>;
}

/** 1 KB request/response over 4 pipelined connections (bench/tools/weft-load.c, mode tcp). */
export const latency = (lab: string, pod: string, host: string, port: number, rate: number, seconds: number) =>
  execJson<Latency>(lab, pod, [WEFT_LOAD, 'tcp', host, String(port), String(rate), '4', String(seconds), '1024', '1']);

/** HTTP/1.1 over 8 kept-alive connections (one request in flight on each; weft-load, mode http). */
export const httpLatency = (lab: string, pod: string, host: string, port: number, rate: number, seconds: number, authority = host, headerFile?: string) =>
  execJson<Latency>(lab, pod, [WEFT_LOAD, 'http', host, String(port), String(rate), '8', String(seconds), '1024', '1', authority, ...(headerFile ? [headerFile] : [])]);

/** The processes of a lab pod: every process in its network namespace (`<lab>.<ns>.<pod>`). */
export function podPids(lab: string, ns: string, pod: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', `${lab}.${ns}.${pod}`], { encoding: 'utf8' });
  const pids = r.stdout.split('\n').filter(Boolean).map(Number);
  if (r.status !== 0 || pids.length === 0) throw new Error(`no processes in pod ${ns}/${pod}: ${r.stderr.trim()}`);
  return pids;
}

export const connRate = (lab: string, pod: string, host: string, port: number, seconds: number) =>
  execJson<{ conn_per_s: number; errors: number }>(lab, pod, [WEFT_LOAD, 'connrate', host, String(port), '8', String(seconds), '1024']).conn_per_s;

/** iperf3's average, and the spread of its 1-second intervals ((max - min) / median, percent). */
export function throughput(lab: string, pod: string, host: string, seconds: number): { gbps: number; spreadPct: number } {
  type Iperf = { end: { sum_received: { bits_per_second: number } }; intervals: { sum: { bits_per_second: number; seconds: number; omitted?: boolean } }[] };
  const r = execJson<Iperf>(lab, pod, ['sh', '-c', `iperf3 -c ${host} -p 5201 -t ${seconds} -O 1 -J | tr -d '\\n'; echo`]);
  // Whole seconds only (iperf ends with a sliver of an interval); -O 1 leaves out the first second's slow start.
  const per = r.intervals.filter((i) => i.sum.seconds > 0.9 && !i.sum.omitted).map((i) => i.sum.bits_per_second).sort((a, b) => a - b);
  const median = per[per.length >> 1] ?? 0;
  return {
    gbps: Math.round((r.end.sum_received.bits_per_second / 1e9) * 100) / 100,
    spreadPct: median > 0 ? Math.round(((per.at(-1)! - per[0]!) / median) * 100) : 0,
  };
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

export function rssMb(pid: number, field: 'VmRSS' | 'RssAnon' | 'RssFile' = 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round((Number(m?.[1] ?? 0) / 1024) * 10) / 10;
}

/** Busy, stolen and total CPU time of the whole machine so far (/proc/stat, in clock ticks). */
export function machineTicks(): { busy: number; steal: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  // idle and iowait are not busy; steal is time the hypervisor gave to other guests.
  return { busy: total - f[3]! - f[4]!, steal: f[7] ?? 0, total };
}

/** The share of CPU time the hypervisor took away between two readings, in percent. */
export const stealPct = (a: ReturnType<typeof machineTicks>, b: ReturnType<typeof machineTicks>) =>
  Math.round(((b.steal - a.steal) / Math.max(1, b.total - a.total)) * 1000) / 10;

/**
 * Waits until the machine has been quiet for a second (busy below `threshold` of all cores), at
 * most `maxSeconds`. The lab's pods and agents start with seconds of module loading and
 * compilation: measured then, the direct path's p99 was 2-3 times its value at the end of the run.
 * Returns the last second's busy fraction and the seconds waited.
 */
export async function settle(threshold = 0.1, maxSeconds = 30): Promise<{ busy: number; waitedS: number }> {
  const t0 = Date.now();
  for (;;) {
    const a = machineTicks();
    await new Promise((r) => setTimeout(r, 1000));
    const b = machineTicks();
    const busy = (b.busy - a.busy) / Math.max(1, b.total - a.total);
    const waitedS = Math.round((Date.now() - t0) / 1000);
    if (busy < threshold || waitedS >= maxSeconds) return { busy: Math.round(busy * 100) / 100, waitedS };
  }
}
