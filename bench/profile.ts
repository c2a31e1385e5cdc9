// Where the agent's CPU goes: self time per function from V8 .cpuprofile files (node --cpu-prof).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function, or per source file with `byFile` (where a proxy's CPU goes, by part). */
export function hotFunctions(dir: string, top = 15, byFile = false): { fn: string; selfPct: number }[] {
  const self = new Map<string, number>();
  let total = 0;
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {}
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const n = byId.get(id)!;
      const dt = p.timeDeltas[i] ?? 0;
      const name = n.callFrame.functionName || '(anonymous)';
      if (name === '(idle)' || name === '(program)') return;
      const where = n.callFrame.url.replace(/^file:\/\/.*?\/(src|node_modules)\//, '$1/').replace(/^node:/, 'node:');
      const key = byFile ? where || name : `${name} ${where ? `(${where}${n.callFrame.lineNumber >= 0 ? `:${n.callFrame.lineNumber + 1}` : ''})` : ''}`.trim();
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    });
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, t]) => ({ fn, selfPct: Math.round((t / Math.max(1, total)) * 1000) / 10 }));
}
