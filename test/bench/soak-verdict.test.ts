// The soak's verdict (bench/soak-verdict.ts) on synthetic records: a clean run passes, and each
// kind of defect the soak is there to catch fails it — a failed request, a BPF link or map left
// behind by a pod cycle, a leaked fd, sockets that only grow, RSS that grows, a control plane
// whose lives grow — while the noise a real run has (sockets swinging with load, a GC sawtooth)
// does not.
import { describe, expect, it } from 'vitest';
import { verdict, type Counts, type Proc, type Sample, type SoakRecord } from '../../bench/soak-verdict.ts';

const proc = (o: Partial<Proc> = {}): Proc => ({ pid: 1, rssMb: 80, fds: 100, sockets: 60, bpfLinks: 0, bpfMaps: 6, bpfProgs: 5, ...o });
const counts = (o: Partial<Counts> = {}): Counts => ({ sent: 1000, ok: 1000, denied: 0, non2xx: {}, lost: 0, timeouts: 0, malformed: 0, connectErrors: 0, idleCloses: 0, recycled: 0, p50: 1, p99: 1, max: 1, intervalCount: 1, ...o });

/** 30 minutes, a sample every 10 s, the control plane restarting every 300 s, a released point every 30 s. */
function record(tweak: { sample?: (s: Sample, i: number) => void; released?: (s: Sample, i: number) => void; final?: Record<string, Counts> } = {}): SoakRecord {
  const mk = (t: number, i: number): Sample => ({
    t, phase: 'released', churnPods: 0, busyPct: 50, stealPct: 0,
    agents: { 'node-0': proc({ pid: 10, sockets: 60 + (i % 7) * 5, fds: 101 + (i % 7) * 5 }), 'node-1': proc({ pid: 11 }) },
    // A GC sawtooth within each life of the control plane (pid changes every 300 s).
    control: proc({ pid: 100 + Math.floor(t / 300), rssMb: 95 + ((t % 300) / 300) * 30, fds: 30 }),
    pinned: { 'node-0': { links: 6, maps: 7 }, 'node-1': { links: 12, maps: 10 } },
    machineBpfLinks: 18, machineBpfMaps: 19, certsIssued: i, policyChanges: i * 100, controlPushes: i * 10,
    requests: { ok: 0, failed: 0, denied: 0, deniedClassOk: 0, sent: 0 },
  });
  const samples = Array.from({ length: 180 }, (_, i) => mk(i * 10, i));
  samples.forEach((s, i) => tweak.sample?.(s, i));
  const released = Array.from({ length: 48 }, (_, i) => mk(370 + i * 30, i));
  released.forEach((s, i) => tweak.released?.(s, i));
  const final = tweak.final ?? { mesh: counts({ sent: 900_000, ok: 900_000 }), waypoint: counts({ sent: 810_000, ok: 810_000 }), denied: counts({ sent: 90_000, ok: 45_000, denied: 45_000 }) };
  return {
    minutes: 30, warmup_s: 360, control_plane_every_s: 300,
    targets: [{ name: 'mesh', rate: 500, conns: 9 }, { name: 'waypoint', rate: 450, conns: 8 }, { name: 'denied', rate: 50, conns: 2 }],
    samples, released_samples: released, control_plane_life_ends: [], control_plane_restarts: [300, 600, 900, 1200, 1500].map((t) => ({ t, downS: 2 })),
    pod_cycles: released.map(() => ({ up: 100 })), policy: { changes: 18_000 }, generator: [{ t: 1800, final: true, targets: final }],
  };
}
const failing = (r: SoakRecord) => verdict(r).checks.filter((c) => !c.pass).map((c) => c.check);

describe('soak verdict', () => {
  it('passes a clean run, with sockets swinging with load and the control plane\'s GC sawtooth', () => {
    const v = verdict(record());
    expect(v.checks.filter((c) => !c.pass)).toEqual([]);
    expect(v.pass).toBe(true);
  });

  it('fails a run with one failed request, whatever its kind', () => {
    const bads: Partial<Counts>[] = [{ non2xx: { 503: 1 } }, { lost: 1 }, { timeouts: 1 }, { malformed: 1 }, { non2xx: { 403: 1 } }];
    for (const bad of bads) {
      const r = record({ final: { mesh: counts(bad), waypoint: counts(), denied: counts({ ok: 500, denied: 500 }) } });
      expect(failing(r)).toContain('no failed request other than deliberate denials');
    }
  });

  it('fails when the denied class was never denied (the policy did not take effect)', () => {
    const r = record({ final: { mesh: counts(), waypoint: counts(), denied: counts() } });
    expect(failing(r)).toContain('the denied class was denied and allowed as the policy alternated');
  });

  it('fails a BPF link or map left behind by one pod cycle', () => {
    expect(failing(record({ released: (s, i) => i === 30 && (s.pinned['node-1']!.links = 18) })).join()).toMatch(/node-1: BPF links and maps flat/);
    expect(failing(record({ released: (s, i) => i > 40 && (s.agents['node-0']!.bpfMaps = 7) })).join()).toMatch(/node-0: BPF links and maps flat/);
  });

  it('fails a leaked fd that is not a socket, even one', () => {
    expect(failing(record({ released: (s, i) => i === 47 && (s.agents['node-0']!.fds += 1) })).join()).toMatch(/agent node-0: fds other than sockets/);
  });

  it('fails sockets that leak one per pod cycle, not sockets that swing', () => {
    const leak = record({
      released: (s, i) => {
        s.agents['node-1']!.sockets += i;
        s.agents['node-1']!.fds += i;
      },
    });
    expect(failing(leak).join()).toMatch(/agent node-1: sockets in use without a trend/);
  });

  it('does not count dial sockets made ahead of time as held, and still fails a leak beside them', () => {
    // A pod's pool refills in batches of up to 128: raw counts swing by that much between points.
    const refill = (leak: number) => (s: Sample, i: number) => {
      const ready = (i * 37) % 129;
      s.agents['node-1']!.sockets += ready + leak * i;
      s.agents['node-1']!.fds += ready + leak * i;
      s.agents['node-1']!.dialSocketsReady = ready;
    };
    expect(failing(record({ released: refill(0) }))).toEqual([]);
    expect(failing(record({ released: refill(1) })).join()).toMatch(/agent node-1: sockets in use without a trend/);
    // A short run (fewer than 3 released points a half) compares the two ends within the generator's connections.
    const short = (leak: number) => {
      const r = record({ released: refill(leak) });
      r.released_samples = [r.released_samples[1]!, r.released_samples[3]!];
      return r;
    };
    expect(failing(short(0))).toEqual([]);
    expect(failing(short(20)).join()).toMatch(/agent node-1: sockets in use flat/);
    // Without the count subtracted, the refills alone fail the short run (CI's soak did).
    const raw = short(0);
    for (const s of raw.released_samples) delete s.agents['node-1']!.dialSocketsReady;
    expect(failing(raw).join()).toMatch(/agent node-1: sockets in use flat/);
  });

  it('fails agent RSS growing 5 % after the warm-up, not before it', () => {
    const grows = record({ sample: (s) => (s.agents['node-0']!.rssMb = 80 * (1 + (0.08 * s.t) / 1800)) });
    expect(failing(grows).join()).toMatch(/RSS growth/);
    const warms = record({ sample: (s) => (s.agents['node-0']!.rssMb = s.t < 360 ? 60 + s.t / 18 : 80) });
    expect(failing(warms)).toEqual([]);
  });

  it('fails a control plane whose lives grow, judged by life, not by the sample before each kill', () => {
    const grows = record({ sample: (s) => (s.control!.rssMb += Math.floor(s.t / 300) * 4) });
    expect(failing(grows).join()).toMatch(/RSS growth/);
  });

  it('fails a control-plane restart that did not happen or failed', () => {
    const r = record();
    r.control_plane_restarts = [];
    expect(failing(r)).toContain('control plane restarted on schedule');
    r.control_plane_restarts = [{ t: 300, downS: 60, error: 'timed out' }];
    expect(failing(r)).toContain('control plane restarted on schedule');
  });
});
