// `promtool check metrics` over an exposition, when promtool is installed (Debian: prometheus).
// Its one complaint about Istio's own names is allowed: istio_request_duration_milliseconds is
// linted for not using seconds, but the name is Istio's, which dashboards and alerts query.
import { spawnSync } from 'node:child_process';

export const ISTIO_NAME_LINT = 'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"';

/** What promtool finds beyond Istio's naming; undefined when promtool is not installed. */
export function promtoolProblems(text: string): string[] | undefined {
  if (spawnSync('which', ['promtool']).status !== 0) return undefined;
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  const lines = `${r.stdout}${r.stderr}`.split('\n').map((l) => l.trim()).filter((l) => l && l !== ISTIO_NAME_LINT);
  // Exit 3 is "lint problems", which the filter above accounts for; anything else is a failure to parse.
  if (r.status !== 0 && r.status !== 3) lines.push(`promtool exited ${r.status}`);
  return lines;
}
