// Repeatability: how much this run's figures moved against the previous recorded run, set
// against the noise measured inside this run. Both come from the runs themselves.
import type { PathResult } from './report.ts';

/** Spread measured within one run, in percent of the figure. */
export interface Noise {
  /** The direct path's two 1000 req/s rounds: the run's first and last latency runs. */
  p50Pct: number;
  p99Pct: number;
}

export interface RunSummary {
  paths: Partial<Record<string, PathResult>>;
  ratios: Record<string, unknown>;
  noise_pct: Noise;
}

type Kind = 'throughput' | 'p50' | 'p99' | 'conn' | 'cpu';

export interface Change {
  figure: string;
  path: string;
  kind: Kind;
  previous: number;
  current: number;
  changePct: number;
}

const pct = (a: number, b: number) => Math.round(((b - a) / a) * 100);

/** Figure by figure: throughput, p50 and p99 at 1000 req/s, connections/s, agent and L7 proxy CPU per path. */
export function changes(prev: RunSummary, cur: RunSummary): Change[] {
  const out: Change[] = [];
  for (const [name, c] of Object.entries(cur.paths)) {
    const p = prev.paths[name];
    if (!p || !c) continue;
    const add = (figure: string, kind: Kind, a: number | undefined, b: number | undefined) => {
      if (typeof a === 'number' && typeof b === 'number' && Number.isFinite(a) && Number.isFinite(b) && a > 0) out.push({ figure, path: name, kind, previous: a, current: b, changePct: pct(a, b) });
    };
    add(`${name} throughput Gbit/s`, 'throughput', p.throughput_gbps, c.throughput_gbps);
    add(`${name} p50 µs @1000`, 'p50', p.latency_us['1000']?.p50, c.latency_us['1000']?.p50);
    add(`${name} p99 µs @1000`, 'p99', p.latency_us['1000']?.p99, c.latency_us['1000']?.p99);
    add(`${name} new conn/s`, 'conn', p.conn_per_s, c.conn_per_s);
    add(`${name} vCPU per 1000 rps`, 'cpu', p.agent_cpu_per_krps ?? p.proxy_cpu_per_krps, c.agent_cpu_per_krps ?? c.proxy_cpu_per_krps);
    add(`${name} L7 proxy vCPU per 1000 rps`, 'cpu', p.l7_cpu_per_krps, c.l7_cpu_per_krps);
  }
  return out;
}

/**
 * The noise in this run a change is judged against: each figure by the path's own spread in the
 * run (two latency rounds, iperf's intervals, two connection rounds), latency by the direct path's
 * when the path has none recorded, CPU by the larger of its latency and connection noise (it is
 * measured during the latency runs, per request).
 */
export function noiseFor(c: Pick<Change, 'kind' | 'path'>, run: RunSummary): number | undefined {
  const own = run.paths[c.path]?.noise_pct;
  switch (c.kind) {
    case 'throughput': return own?.throughput;
    case 'p50': return own?.p50 ?? run.noise_pct.p50Pct;
    case 'p99': return own?.p99 ?? run.noise_pct.p99Pct;
    case 'conn': return own?.conn;
    case 'cpu': return Math.max(own?.p50 ?? run.noise_pct.p50Pct, own?.conn ?? 0);
  }
}

/** Markdown: every figure's change against the previous run, and whether it is within the noise. */
export function repeatabilityTable(prev: RunSummary, prevWhen: string, cur: RunSummary): string {
  const rows = changes(prev, cur);
  const within = rows.filter((r) => Math.abs(r.changePct) <= (noiseFor(r, cur) ?? Infinity)).length;
  return [
    `Against the previous run (${prevWhen}): ${within} of ${rows.length} figures moved by no more than this run's own noise for their kind.`,
    '',
    '| figure | previous | this run | change | noise in this run |',
    '|---|---|---|---|---|',
    ...rows.map((r) => {
      const n = noiseFor(r, cur);
      const flag = n !== undefined && Math.abs(r.changePct) > n ? ' **(beyond)**' : '';
      return `| ${r.figure} | ${r.previous} | ${r.current} | ${r.changePct > 0 ? '+' : ''}${r.changePct} %${flag} | ${n === undefined ? '—' : `±${n} %`} |`;
    }),
  ].join('\n');
}
