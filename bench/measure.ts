// Running the measurement tools inside lab pods and reading agent CPU and memory from /proc.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tsx } from './setup.ts';

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
}

export const latency = (lab: string, pod: string, host: string, port: number, rate: number, seconds: number) =>
  execJson<Latency>(lab, pod, tsx('loadgen.ts', host, String(port), String(rate), '4', String(seconds), '1024', '1'));

export const connRate = (lab: string, pod: string, host: string, port: number, seconds: number) =>
  execJson<{ conn_per_s: number; errors: number }>(lab, pod, tsx('connrate.ts', host, String(port), '8', String(seconds), '1024')).conn_per_s;

export function throughputGbps(lab: string, pod: string, host: string, seconds: number): number {
  const r = execJson<{ end: { sum_received: { bits_per_second: number } } }>(lab, pod, ['sh', '-c', `iperf3 -c ${host} -p 5201 -t ${seconds} -J | tr -d '\\n'; echo`]);
  return Math.round((r.end.sum_received.bits_per_second / 1e9) * 100) / 100;
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Math.round((Number(m?.[1] ?? 0) / 1024) * 10) / 10;
}
