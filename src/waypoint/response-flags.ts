// Envoy's response flags as its access log prints several at once: comma-separated, in Envoy's
// own order (the order of its flag bits), whatever order the waypoint learned them in.
const ORDER = ['LH', 'UH', 'UT', 'LR', 'UR', 'UF', 'UC', 'UO', 'NR', 'DI', 'FI', 'RL', 'UAEX', 'RLSE', 'DC', 'URX', 'SI', 'IH', 'DPE'];

/** Joins flags ('-' or empty parts are none) in Envoy's order; '-' when there are none. */
export function joinFlags(...flags: string[]): string {
  const set = new Set(flags.flatMap((f) => f.split(',')).filter((f) => f && f !== '-'));
  if (!set.size) return '-';
  const rank = (f: string) => (ORDER.includes(f) ? ORDER.indexOf(f) : ORDER.length);
  return [...set].sort((a, b) => rank(a) - rank(b)).join(',');
}
