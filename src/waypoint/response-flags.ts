// Envoy's response flags as its access log prints several at once: comma-separated, in Envoy's
// own order (the order of its flag bits), whatever order the waypoint learned them in.
import { RATE_LIMITED_BODY } from './filters/rate-limit.ts';

const ORDER = ['LH', 'UH', 'UT', 'LR', 'UR', 'UF', 'UC', 'UO', 'NR', 'DI', 'FI', 'RL', 'UAEX', 'RLSE', 'DC', 'URX', 'SI', 'IH', 'DPE'];

/** Joins flags ('-' or empty parts are none) in Envoy's order; '-' when there are none. */
export function joinFlags(...flags: string[]): string {
  const set = new Set(flags.flatMap((f) => f.split(',')).filter((f) => f && f !== '-'));
  if (!set.size) return '-';
  const rank = (f: string) => (ORDER.includes(f) ? ORDER.indexOf(f) : ORDER.length);
  return [...set].sort((a, b) => rank(a) - rank(b)).join(',');
}

/** The body of a reply the waypoint answers itself, by its response flag, as Envoy words them. */
export const LOCAL_BODY: Readonly<Record<string, string>> = {
  NR: 'route not found',
  NC: 'cluster not found',
  UH: 'no healthy upstream',
  UF: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
  UC: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination',
  UR: 'upstream connect error or disconnect/reset before headers. reset reason: remote reset',
  UT: 'upstream request timeout',
  RL: RATE_LIMITED_BODY,
  UO: 'upstream connect error or disconnect/reset before headers. reset reason: overflow',
};

/** UR's body when the upstream refused the stream (RST_STREAM REFUSED_STREAM), as Envoy words it. */
export const REFUSED_STREAM_BODY = 'upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset';
