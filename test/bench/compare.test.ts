import { describe, expect, it } from 'vitest';
import { changes, noiseFor, repeatabilityTable, type RunSummary } from '../../bench/compare.ts';

const run = (gbps: number, p50: number, conn: number, cpu: number): RunSummary => ({
  paths: {
    direct: { throughput_gbps: gbps * 5, latency_us: { '1000': { p50: 200, p90: 300, p99: 2000, p999: 5000 } }, conn_per_s: conn * 3 },
    'weft-ebpf': { throughput_gbps: gbps, latency_us: { '1000': { p50, p90: p50 * 2, p99: p50 * 8, p999: p50 * 20 } }, conn_per_s: conn, agent_cpu_per_krps: cpu, noise_pct: { throughput: 10, conn: 8, p99: 40 } },
  },
  ratios: {},
  noise_pct: { p50Pct: 5, p99Pct: 30 },
});

describe('bench repeatability', () => {
  it('lists each figure with its change in percent', () => {
    const c = changes(run(2, 600, 500, 0.2), run(2.2, 540, 500, 0.21));
    const by = Object.fromEntries(c.map((x) => [x.figure, x.changePct]));
    expect(by['weft-ebpf throughput Gbit/s']).toBe(10);
    expect(by['weft-ebpf p50 µs @1000']).toBe(-10);
    expect(by['weft-ebpf new conn/s']).toBe(0);
    expect(by['weft-ebpf vCPU per 1000 rps']).toBe(5);
    expect(by['direct vCPU per 1000 rps']).toBeUndefined(); // no CPU figure for direct
  });

  it('judges each change against the noise of its kind and flags the ones beyond it', () => {
    const cur = run(2.2, 540, 500, 0.21);
    expect(noiseFor({ kind: 'p99', path: 'weft-ebpf' }, cur)).toBe(40); // the path's own two rounds
    expect(noiseFor({ kind: 'p99', path: 'direct' }, cur)).toBe(30); // none recorded: the run's
    expect(noiseFor({ kind: 'conn', path: 'weft-ebpf' }, cur)).toBe(8);
    expect(noiseFor({ kind: 'conn', path: 'direct' }, cur)).toBeUndefined(); // no spread recorded for it
    const md = repeatabilityTable(run(2, 600, 500, 0.2), 'then', cur);
    expect(md).toMatch(/\| weft-ebpf p50 µs @1000 \| 600 \| 540 \| -10 % \*\*\(beyond\)\*\* \| ±5 % \|/);
    expect(md).toMatch(/\| weft-ebpf throughput Gbit\/s \| 2 \| 2.2 \| \+10 % \| ±10 % \|/);
    expect(md).toMatch(/\| direct throughput Gbit\/s \| 10 \| 11 \| \+10 % \| — \|/);
    expect(md).toContain('8 of 9 figures');
  });
});
