// The benchmark's outputs: markdown tables (TCP paths, HTTP paths) and SVG charts of latency by rate.
import type { PathName } from './setup.ts';
import type { Latency } from './measure.ts';

export interface PathResult {
  throughput_gbps: number;
  latency_us: Record<string, Pick<Latency, 'p50' | 'p90' | 'p99' | 'p999'>>;
  conn_per_s: number;
  agent_cpu_per_krps?: number;
  agent_rss_mb?: number;
  /** The RSS split: anonymous memory (heaps), and file pages (mostly the node binary's code). */
  agent_rss_anon_mb?: number;
  agent_rss_file_mb?: number;
  /** haproxy-mtls: the same CPU figure for the busier HAProxy instance, and its RSS. */
  proxy_cpu_per_krps?: number;
  proxy_rss_mb?: number;
  /**
   * weft-waypoint and haproxy-http: the L7 proxy's (the waypoint pod's, HAProxy's middle pod's)
   * CPU per 1000 req/s, measured as the agents' is, and its RSS.
   */
  l7_cpu_per_krps?: number;
  l7_rss_mb?: number;
  l7_rss_anon_mb?: number;
  /** HTTP paths: requests unanswered (lost), answered with other than 2xx, connections closed under the client. */
  http_failures?: { lost: number; non2xx: number; errors: number; codes?: Record<string, number> };
  /**
   * This path's own noise in the run, in percent: the spread of iperf's 1-second intervals, and
   * the difference between its two connection-rate rounds and its two 1000 req/s latency rounds.
   */
  noise_pct?: { throughput?: number; conn?: number; p50?: number; p99?: number };
  /** How late the load generator sent requests after their due times at 1000 req/s (its own share of the latency), µs. */
  generator_late_us?: { p50: number; p99: number };
  /**
   * TCP paths: latency rounds measured again, at any rate, because the generator itself was late
   * beyond LATE_P99_LIMIT_US at p99 (bench/run.ts): the machine, not the path, had stalled it.
   */
  disturbed_rounds?: number;
}

/**
 * A TCP path's latency round in which the load generator sent its requests later than this at p99
 * measures the machine's stall, not the path: the round is run again (at most MAX_REDO times). On a
 * quiet machine the generator's own p99 lateness is 50-100 µs; a stalled round read 903 µs. HTTP
 * paths are exempt: with one request in flight per connection, a slow path makes the generator
 * late by itself.
 */
export const LATE_P99_LIMIT_US = 300;
export const MAX_REDO = 2;

/** Whether a latency round measured the machine's stall rather than the path (LATE_P99_LIMIT_US). */
export const stalledRound = (r: { late_p99: number }, http: boolean) => !http && r.late_p99 > LATE_P99_LIMIT_US;

export const RATES = [500, 1000, 2000];

export function markdownTable(paths: Partial<Record<PathName, PathResult>>): string {
  const rows = ['| path | throughput Gbit/s | p50 / p99 µs @500 | p50 / p90 / p99 / p99.9 µs @1000 | p50 / p99 µs @2000 | new conn/s | agent vCPU per 1000 rps | agent RSS MB |', '|---|---|---|---|---|---|---|---|'];
  for (const [name, r] of Object.entries(paths)) {
    const l = (rate: number) => r.latency_us[String(rate)]!;
    rows.push(
      `| ${name} | ${r.throughput_gbps} | ${l(500).p50} / ${l(500).p99} | ${l(1000).p50} / ${l(1000).p90} / ${l(1000).p99} / ${l(1000).p999} | ${l(2000).p50} / ${l(2000).p99} | ${r.conn_per_s} | ${r.agent_cpu_per_krps ?? (r.proxy_cpu_per_krps !== undefined ? `(HAProxy ${r.proxy_cpu_per_krps})` : '—')} | ${r.agent_rss_mb ?? '—'} |`,
    );
  }
  return rows.join('\n');
}

/** The HTTP paths: latency by rate, the mesh's agents' CPU, the L7 proxy's CPU and RSS. */
export function httpTable(paths: Partial<Record<PathName, PathResult>>): string {
  const rows = [
    '| path | p50 / p99 µs @500 | p50 / p90 / p99 / p99.9 µs @1000 | p50 / p99 µs @2000 | failed requests | agent (or HAProxy edge) vCPU per 1000 rps | L7 proxy vCPU per 1000 rps | L7 proxy RSS MB (anonymous) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  const dash = (v: number | undefined) => (v === undefined ? '—' : String(v));
  for (const [name, r] of Object.entries(paths)) {
    const l = (rate: number) => r.latency_us[String(rate)];
    const two = (rate: number) => (l(rate) ? `${l(rate)!.p50} / ${l(rate)!.p99}` : '—');
    const k = l(1000);
    const f = r.http_failures;
    const failed = f ? f.lost + f.non2xx : undefined;
    rows.push(
      `| ${name} | ${two(500)} | ${k ? `${k.p50} / ${k.p90} / ${k.p99} / ${k.p999}` : '—'} | ${two(2000)} | ${dash(failed)} | ${r.agent_cpu_per_krps ?? (r.proxy_cpu_per_krps !== undefined ? `(HAProxy ${r.proxy_cpu_per_krps})` : '—')} | ${dash(r.l7_cpu_per_krps)} | ${r.l7_rss_mb === undefined ? '—' : `${r.l7_rss_mb} (${r.l7_rss_anon_mb})`} |`,
    );
  }
  return rows.join('\n');
}

const COLORS = ['#444', '#1b7f3b', '#2e86de', '#d35400', '#8e44ad'];

/** Latency (p50 solid, p99 dashed) against request rate, one colour per path, log-scale y. */
export function latencyChart(paths: Partial<Record<PathName, PathResult>>, title = 'Request latency by rate (1 KB request/response, 4 connections): p50 solid, p99 dashed'): string {
  const W = 720;
  const H = 400;
  const m = { l: 70, r: 190, t: 30, b: 50 };
  // A path measured at some rates only (one past its capacity at the others) is drawn where it was.
  const all = Object.values(paths).flatMap((r) => RATES.flatMap((x) => (r.latency_us[String(x)] ? [r.latency_us[String(x)]!.p50, r.latency_us[String(x)]!.p99] : [])));
  const lo = Math.log10(Math.max(1, Math.min(...all) * 0.8));
  const hi = Math.log10(Math.max(...all) * 1.2);
  const X = (i: number) => m.l + (i / (RATES.length - 1)) * (W - m.l - m.r);
  const Y = (v: number) => m.t + (1 - (Math.log10(v) - lo) / (hi - lo)) * (H - m.t - m.b);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(`<text x="${m.l}" y="18" font-size="14">${title}</text>`);
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++)
    for (const k of [1, 2, 5]) {
      const v = k * 10 ** e;
      if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
      out.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${Y(v) + 4}" text-anchor="end">${v >= 1000 ? `${v / 1000} ms` : `${v} µs`}</text>`);
    }
  RATES.forEach((r, i) => out.push(`<text x="${X(i)}" y="${H - m.b + 18}" text-anchor="middle">${r} req/s</text>`));
  Object.entries(paths).forEach(([name, r], k) => {
    const c = COLORS[k % COLORS.length];
    for (const [q, dash] of [['p50', ''], ['p99', ' stroke-dasharray="5,4"']] as const) {
      const pts = RATES.flatMap((x, i) => (r.latency_us[String(x)] ? [`${X(i)},${Y(r.latency_us[String(x)]![q])}`] : [])).join(' ');
      out.push(`<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="2"${dash}/>`);
    }
    out.push(`<rect x="${W - m.r + 15}" y="${m.t + k * 20}" width="12" height="12" fill="${c}"/><text x="${W - m.r + 32}" y="${m.t + k * 20 + 10}">${name}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
