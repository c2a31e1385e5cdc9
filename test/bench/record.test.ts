// The load generator's floor line, which every run prints: with the TCP latency rounds the machine
// stalled and the bench ran again, and the rule that picks those rounds out.
import { describe, expect, it } from 'vitest';
import { generatorFloor } from '../../bench/record.ts';
import { LATE_P99_LIMIT_US, stalledRound, type PathResult } from '../../bench/report.ts';

const path = (p: Partial<PathResult>): PathResult => ({ throughput_gbps: 1, latency_us: { '1000': { p50: 56, p90: 80, p99: 183, p999: 900 } }, conn_per_s: 1, ...p });

describe('the load generator floor', () => {
  it('names the rounds measured again, and says so when there were none', () => {
    const quiet = generatorFloor({ direct: path({ generator_late_us: { p50: 0, p99: 57 } }) });
    expect(quiet).toContain('p50 56 µs, p99 183 µs');
    expect(quiet).toContain('none this run');
    const stalled = generatorFloor({ direct: path({ generator_late_us: { p50: 0, p99: 57 } }), 'weft-ebpf': path({ disturbed_rounds: 2 }) });
    expect(stalled).toContain('weft-ebpf 2');
    expect(stalled).not.toContain('none this run');
  });

  it('takes a TCP round whose generator was late beyond the limit for a stall, never an HTTP round', () => {
    expect(stalledRound({ late_p99: 903 }, false)).toBe(true);
    expect(stalledRound({ late_p99: LATE_P99_LIMIT_US }, false)).toBe(false);
    expect(stalledRound({ late_p99: 57 }, false)).toBe(false);
    // One request in flight per connection: a slow HTTP path makes the generator late by itself.
    expect(stalledRound({ late_p99: 10_540 }, true)).toBe(false);
  });
});
