// The soak's pass criteria (issue #17), judged from what a run recorded (bench/soak.ts), so a
// saved run can be judged again: `node --import tsx bench/soak.ts --judge bench/results/soak-….json`.

export interface Proc {
  pid: number;
  rssMb: number;
  fds: number;
  sockets: number;
  bpfLinks: number;
  bpfMaps: number;
  bpfProgs: number;
  /** An agent's dial sockets made ahead of time and not used yet (its metric, read with the fds). */
  dialSocketsReady?: number;
}

export type Counts = {
  sent: number;
  ok: number;
  denied: number;
  non2xx: Record<string, number>;
  lost: number;
  timeouts: number;
  malformed: number;
  connectErrors: number;
  idleCloses: number;
  recycled: number;
  p50: number;
  p99: number;
  max: number;
  intervalCount: number;
  run?: { p50: number; p90: number; p99: number; p999: number; max: number };
};
export type GenLine = { t: number; final: boolean; targets: Record<string, Counts> };
export const failedOf = (c: Counts) => Object.values(c.non2xx).reduce((a, b) => a + b, 0) + c.lost + c.timeouts + c.malformed;

export interface Sample {
  t: number;
  phase: string;
  churnPods: number;
  /** The machine's CPU busy and stolen since the previous sample, percent of all cores. */
  busyPct: number;
  stealPct: number;
  agents: Record<string, Proc | undefined>;
  control?: Proc;
  waypoint?: Proc;
  pinned: Record<string, { links: number; maps: number }>;
  machineBpfLinks: number;
  machineBpfMaps: number;
  certsIssued: number;
  policyChanges: number;
  /** Model builds the control plane pushed, over all its lives. */
  controlPushes: number;
  requests: { ok: number; failed: number; denied: number; deniedClassOk: number; sent: number };
}

/** What the verdict reads from a run's record. */
export interface SoakRecord {
  minutes: number;
  warmup_s: number;
  control_plane_every_s: number;
  targets: { name: string; rate: number; conns: number }[];
  samples: Sample[];
  released_samples: Sample[];
  control_plane_life_ends: (Proc & { t: number })[];
  control_plane_restarts: { t: number; downS: number; error?: string }[];
  pod_cycles: { up: number; error?: string }[];
  policy: { changes: number };
  generator: GenLine[];
}

export interface Check {
  check: string;
  pass: boolean;
  value: string;
}

const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[xs.length >> 1]! : NaN);
const pct = (a: number, b: number) => Math.round(((b - a) / a) * 1000) / 10;

export function verdict(r: SoakRecord) {
  const durationS = Math.round(r.minutes * 60);
  const warmupS = r.warmup_s;
  const final = r.generator.find((l) => l.final);
  const checks: Check[] = [];
  const info: string[] = [];
  if (!final) return { pass: false, checks: [{ check: 'the load generator finished', pass: false, value: 'no final line' }], info };
  const samples = r.samples;
  const nodes = [...new Set(samples.flatMap((s) => Object.keys(s.agents)))].sort();

  // Requests: nothing failed; the denied class saw both sides of the policy it is denied by.
  const failed = Object.fromEntries(Object.entries(final.targets).map(([n, c]) => [n, failedOf(c)]));
  const totalFailed = Object.values(failed).reduce((a, b) => a + b, 0);
  const sent = Object.values(final.targets).reduce((a, c) => a + c.sent, 0);
  const d = final.targets.denied;
  const describe = (n: string, c: Counts) =>
    `${n}: ${c.ok} ok, ${c.denied} denied, ${JSON.stringify(c.non2xx)} non-2xx, ${c.lost} lost, ${c.timeouts} timed out, ${c.malformed} malformed, ${c.connectErrors} connect errors, ${c.idleCloses} idle closes`;
  checks.push({ check: 'no failed request other than deliberate denials', pass: totalFailed === 0, value: `${totalFailed} failed of ${sent} (${Object.entries(final.targets).map(([n, c]) => describe(n, c)).join('; ')})` });
  checks.push({ check: 'the denied class was denied and allowed as the policy alternated', pass: !!d && d.denied > 0 && d.ok > 0, value: d ? `${d.denied} denied, ${d.ok} allowed` : 'no denied class' });

  // RSS: the median of the samples in the first 10 % of the run after the warm-up against the
  // median of the last 10 % (several GC cycles and pod-loop phases each, not one sample's luck).
  const after = samples.filter((s) => s.t >= warmupS);
  const win = Math.max(10, durationS * 0.1);
  const rssGrowth = (of: (s: Sample) => number | undefined) => {
    const vals = (xs: Sample[]) => xs.map(of).filter((x): x is number => x !== undefined);
    const a = median(vals(after.filter((s) => s.t < warmupS + win)));
    const b = median(vals(after.filter((s) => s.t > durationS - win && s.t <= durationS)));
    return { from: a, to: b, pct: pct(a, b) };
  };
  const rss: Record<string, { from: number; to: number; pct: number }> = {};
  for (const node of nodes) rss[`agent ${node}`] = rssGrowth((s) => s.agents[node]?.rssMb);
  // The control plane restarts every control_plane_every_s, so its lives are compared, not its
  // samples: the median RSS of each whole life (a life is a pid; its samples swing 90-128 MB with
  // its GC, so one sample per life, e.g. the last before the kill, is mostly the sawtooth's phase),
  // the first whole life that started after the warm-up against the last.
  const byPid = new Map<number, Sample[]>();
  for (const s of samples) if (s.control && s.t <= durationS) byPid.set(s.control.pid, [...(byPid.get(s.control.pid) ?? []), s]);
  const lives = [...byPid.values()].filter((xs) => xs[0]!.t >= warmupS && xs.at(-1)!.t - xs[0]!.t >= r.control_plane_every_s * 0.8);
  const lifeMedian = (xs: Sample[], f: (p: Proc) => number) => median(xs.map((s) => f(s.control!)));
  if (lives.length >= 2) {
    const [a, b] = [lifeMedian(lives[0]!, (p) => p.rssMb), lifeMedian(lives.at(-1)!, (p) => p.rssMb)];
    rss['control plane (median of a whole life)'] = { from: a, to: b, pct: pct(a, b) };
  }
  info.push(`control plane, RSS of each life (t of its first sample: median / max MB): ${[...byPid.values()].map((xs) => `${Math.round(xs[0]!.t)} s: ${lifeMedian(xs, (p) => p.rssMb)} / ${Math.max(...xs.map((s) => s.control!.rssMb))}`).join(', ')}`);
  const rssMeaningful = durationS >= 600;
  checks.push({
    check: `agent and control-plane RSS growth < 5 % after the warm-up (${warmupS} s)${rssMeaningful ? '' : ' (not judged: a run under 10 min is too short)'}`,
    pass: !rssMeaningful || Object.values(rss).every((x) => x.pct < 5),
    value: Object.entries(rss).map(([k, v]) => `${k} ${v.from} → ${v.to} MB (${v.pct} %)`).join('; ') || 'no control-plane life after the warm-up to compare',
  });

  // fds, BPF links and maps, compared where the pod loop is at the same phase: every churn pod
  // released (samples taken 3 s after the lab shows none), after the warm-up.
  // - Links and maps (pinned per node, and the map fds each agent holds), and every fd of an
  //   agent that is not a socket, must be the same at every such point: nothing stays behind.
  // - Sockets: at such a point an agent holds, besides its fixed ones, the generator's connections
  //   being reopened and released pods' last connections closing, which vary with the machine's
  //   load (measured: 35-71 on node-0 over 63 points, with no trend). A leak is a trend: the median
  //   of the second half of the points must stay within the first half's largest value (a leak of
  //   one socket per pod cycle over the ~30 cycles between the halves would not). With fewer than
  //   3 points a half (a short run), the two ends are compared within the generator's connections.
  const rel = r.released_samples.filter((s) => s.t <= durationS);
  if (rel.length >= 2) {
    const [a, b] = [rel[0]!, rel.at(-1)!];
    const halves = [rel.slice(0, rel.length >> 1), rel.slice(rel.length >> 1)];
    const byTrend = halves[0]!.length >= 3 && halves[1]!.length >= 3;
    const conns = r.targets.reduce((x, t) => x + t.conns, 0);
    for (const node of nodes) {
      const same = rel.every((s) => JSON.stringify(s.pinned[node]) === JSON.stringify(a.pinned[node]) && s.agents[node]?.bpfMaps === a.agents[node]?.bpfMaps && s.agents[node]?.bpfLinks === a.agents[node]?.bpfLinks);
      const pa = a.pinned[node];
      const pb = b.pinned[node];
      checks.push({
        check: `${node}: BPF links and maps flat (the same at all ${rel.length} points with every pod released, t=${a.t}…${b.t} s)`,
        pass: same && !!pa,
        value: `pinned links ${pa?.links} → ${pb?.links}, pinned maps ${pa?.maps} → ${pb?.maps}; agent's fds: maps ${a.agents[node]?.bpfMaps} → ${b.agents[node]?.bpfMaps}, links ${a.agents[node]?.bpfLinks} → ${b.agents[node]?.bpfLinks}, programs ${a.agents[node]?.bpfProgs} → ${b.agents[node]?.bpfProgs}`,
      });
      const other = rel.map((s) => (s.agents[node] ? s.agents[node].fds - s.agents[node].sockets : NaN));
      checks.push({ check: `agent ${node}: fds other than sockets the same at all ${rel.length} released points`, pass: other.every((x) => x === other[0]), value: [...new Set(other)].join(', ') });
      // Sockets that connections hold: an agent's pods' pools of dial sockets made ahead of time
      // refill in batches (up to 128 a family), which says nothing about a leak.
      const held = (p: Proc | undefined) => (p ? p.sockets - (p.dialSocketsReady ?? 0) : undefined);
      const socks = (xs: Sample[]) => xs.map((s) => held(s.agents[node])).filter((x): x is number => x !== undefined);
      if (byTrend) {
        const [max0, med1] = [Math.max(...socks(halves[0]!)), median(socks(halves[1]!))];
        checks.push({ check: `agent ${node}: sockets in use without a trend (median of the second half of the released points ≤ the first half's largest)`, pass: med1 <= max0, value: `${med1} ≤ ${max0}? (all: ${socks(rel).join(' ')})` });
      } else {
        const [s0, s1] = [held(a.agents[node]) ?? NaN, held(b.agents[node]) ?? NaN];
        checks.push({ check: `agent ${node}: sockets in use flat (first and last released point, within the generator's ${conns} connections)`, pass: Math.abs(s1 - s0) <= conns, value: `${s0} → ${s1} (all: ${socks(rel).join(' ')})` });
      }
    }
    info.push(`BPF links and maps of the whole machine (bpftool; other labs count too, and the kernel frees maps lazily), pods released: links ${a.machineBpfLinks} → ${b.machineBpfLinks}, maps ${a.machineBpfMaps} → ${b.machineBpfMaps}`);
  } else checks.push({ check: 'fds, BPF links and maps flat', pass: false, value: `the pod loop released its pods ${rel.length} time(s) after the warm-up: need 2` });
  // The control plane's fds (its listeners, the agents' and the waypoint's streams), life to life.
  if (lives.length >= 2) {
    const [a, b] = [lifeMedian(lives[0]!, (p) => p.fds), lifeMedian(lives.at(-1)!, (p) => p.fds)];
    checks.push({ check: 'control plane: fds flat (median of a whole life, first and last after the warm-up, within 8)', pass: Math.abs(b - a) <= 8, value: `${a} → ${b}` });
  }
  const cerr = r.control_plane_restarts.filter((e) => e.error).length;
  checks.push({ check: 'control plane restarted on schedule', pass: r.control_plane_restarts.length >= 1 && cerr === 0, value: `${r.control_plane_restarts.length} restarts (serving again after ${r.control_plane_restarts.map((e) => `${e.downS} s`).join(', ')})${cerr ? `, ${cerr} failed` : ''}` });
  const perTarget = Object.fromEntries(Object.entries(final.targets).map(([n, c]) => [n, { ...c, failed: failed[n] }]));
  const mean = (f: (s: Sample) => number) => Math.round((samples.reduce((x, s) => x + f(s), 0) / Math.max(1, samples.length)) * 10) / 10;
  return {
    pass: checks.every((c) => c.pass),
    checks,
    info,
    rss_growth: rss,
    machine_busy_pct_mean: mean((s) => s.busyPct),
    machine_steal_pct_mean: mean((s) => s.stealPct),
    requests: perTarget,
    achieved_rate: Math.round(sent / durationS),
    policy_changes_per_s: Math.round((r.policy.changes / durationS) * 10) / 10,
    control_plane_pushes: samples.at(-1)?.controlPushes,
    certs_issued: samples.at(-1)?.certsIssued,
    pod_cycles: r.pod_cycles.length,
    pod_cycle_errors: r.pod_cycles.filter((c) => c.error).length,
  };
}
