// The soak's chart (bench/soak.ts): RSS and open fds of each agent, the control plane and the
// waypoint over the run, and the agents' BPF links and maps, as a plain SVG (no dependency).
// The warm-up is shaded, control-plane restarts are dashed lines.

interface ProcLike {
  rssMb: number;
  fds: number;
  bpfLinks: number;
  bpfMaps: number;
}
export interface ChartSample {
  t: number;
  agents: Record<string, ProcLike | undefined>;
  control?: ProcLike;
  waypoint?: ProcLike;
  pinned: Record<string, { links: number; maps: number }>;
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#d62728', '#8c564b', '#17becf', '#7f7f7f'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

interface Series {
  name: string;
  points: [number, number | undefined][];
  thick?: boolean;
  color?: string;
}

function panel(y0: number, h: number, w: number, title: string, unit: string, series: Series[], tMax: number, warmupS: number, restarts: number[]): string {
  const left = 60;
  const right = w - 170;
  const top = y0 + 24;
  const bottom = y0 + h - 28;
  const vals = series.flatMap((s) => s.points.map((p) => p[1]).filter((v): v is number => v !== undefined));
  const vMax = niceMax(Math.max(1, ...vals));
  const x = (t: number) => Math.round((left + (t / Math.max(1, tMax)) * (right - left)) * 10) / 10;
  const y = (v: number) => Math.round((bottom - (v / vMax) * (bottom - top)) * 10) / 10;
  const out: string[] = [];
  out.push(`<text x="${left}" y="${y0 + 14}" font-weight="bold">${esc(title)}</text>`);
  out.push(`<rect x="${left}" y="${top}" width="${x(warmupS) - left}" height="${bottom - top}" fill="#eee"/>`);
  out.push(`<text x="${left + 4}" y="${top + 12}" fill="#888" font-size="10">warm-up</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (vMax * i) / 4;
    out.push(`<line x1="${left}" x2="${right}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" font-size="10">${Math.round(v * 10) / 10}</text>`);
  }
  out.push(`<text x="14" y="${(top + bottom) / 2}" font-size="10" transform="rotate(-90 14 ${(top + bottom) / 2})" text-anchor="middle">${esc(unit)}</text>`);
  const stepMin = tMax > 1200 ? 5 : tMax > 300 ? 1 : 0.5;
  for (let m = 0; m * 60 <= tMax; m += stepMin) {
    out.push(`<line x1="${x(m * 60)}" x2="${x(m * 60)}" y1="${bottom}" y2="${bottom + 4}" stroke="#333"/>`);
    out.push(`<text x="${x(m * 60)}" y="${bottom + 15}" text-anchor="middle" font-size="10">${m}</text>`);
  }
  out.push(`<text x="${right}" y="${bottom + 26}" text-anchor="end" font-size="10">minutes</text>`);
  for (const t of restarts) out.push(`<line x1="${x(t)}" x2="${x(t)}" y1="${top}" y2="${bottom}" stroke="#d62728" stroke-dasharray="4 3"/>`);
  out.push(`<line x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}" stroke="#333"/><line x1="${left}" x2="${left}" y1="${top}" y2="${bottom}" stroke="#333"/>`);
  series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length]!;
    // A gap where the process was not there (the control plane between kill and start).
    const parts: string[][] = [[]];
    for (const [t, v] of s.points) {
      if (v === undefined) parts.push([]);
      else parts.at(-1)!.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    const width = s.thick ? 3 : 1;
    for (const p of parts) if (p.length) out.push(`<polyline fill="none" stroke="${color}" stroke-width="${width}" points="${p.join(' ')}"/>`);
    out.push(`<line x1="${right + 12}" x2="${right + 30}" y1="${top + 10 + i * 16}" y2="${top + 10 + i * 16}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${right + 35}" y="${top + 14 + i * 16}" font-size="11">${esc(s.name)}</text>`);
  });
  if (restarts.length) out.push(`<text x="${right + 12}" y="${top + 14 + series.length * 16}" font-size="10" fill="#d62728">- - control plane restart</text>`);
  return out.join('\n');
}

function niceMax(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export function soakSvg(o: { samples: ChartSample[]; released?: ChartSample[]; warmupS: number; restarts: number[]; title: string }): string {
  const w = 900;
  const h = 260;
  const nodes = [...new Set(o.samples.flatMap((s) => Object.keys(s.agents)))].sort();
  const tMax = Math.max(...o.samples.map((s) => s.t));
  const of = (name: string, f: (s: ChartSample) => number | undefined): Series => ({ name, points: o.samples.map((s) => [s.t, f(s)]) });
  const procs = (pick: (p: ProcLike) => number) => [
    ...nodes.map((n) => of(`agent ${n}`, (s) => (s.agents[n] ? pick(s.agents[n]) : undefined))),
    of('control plane', (s) => (s.control ? pick(s.control) : undefined)),
    of('waypoint', (s) => (s.waypoint ? pick(s.waypoint) : undefined)),
  ];
  const bpf = [
    ...nodes.map((n) => of(`pinned links ${n}`, (s) => s.pinned[n]?.links)),
    ...nodes.map((n) => of(`pinned maps ${n}`, (s) => s.pinned[n]?.maps)),
    ...nodes.map((n) => of(`map fds agent ${n}`, (s) => s.agents[n]?.bpfMaps)),
  ];
  const body = [
    panel(30, h, w, 'RSS', 'MB', procs((p) => p.rssMb), tMax, o.warmupS, o.restarts),
    // The agents' fds swing with the pod loop; the points where every churn pod is released are what the verdict compares.
    panel(30 + h, h, w, 'open file descriptors (thick: agents with every churn pod released)', 'fds', [...procs((p) => p.fds), ...nodes.map((n, i) => ({ name: `agent ${n}, released`, points: (o.released ?? []).map((s): [number, number | undefined] => [s.t, s.agents[n]?.fds]), thick: true, color: COLORS[i] }))], tMax, o.warmupS, o.restarts),
    panel(30 + 2 * h, h, w, 'BPF links and maps (pinned on bpffs per node, and the map fds each agent holds): they follow the pod loop', 'count', bpf, tMax, o.warmupS, o.restarts),
  ];
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${30 + 3 * h}" viewBox="0 0 ${w} ${30 + 3 * h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>
${body.join('\n')}
</svg>
`;
}
