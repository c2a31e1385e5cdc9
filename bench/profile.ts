// Where a proxy's CPU goes: self time per function, per file, or per part of the work, from V8
// .cpuprofile files (node --cpu-prof).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  samples: number[];
  timeDeltas: number[];
}

/** Every sample of the profiles in `dir`: its own frame and its duration (µs). */
function eachSample(dir: string, f: (frame: CpuProfile['nodes'][number]['callFrame'], dt: number) => void): void {
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'));
  } catch {}
  for (const file of files) {
    const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => f(byId.get(id)!.callFrame, p.timeDeltas[i] ?? 0));
  }
}

/** Self time per key (undefined: the sample is not counted), in percent, largest first. */
function shares(dir: string, keyOf: (frame: CpuProfile['nodes'][number]['callFrame']) => string | undefined): [string, number][] {
  const self = new Map<string, number>();
  let total = 0;
  eachSample(dir, (frame, dt) => {
    const key = keyOf(frame);
    if (key === undefined) return;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  return [...self.entries()].sort((a, b) => b[1] - a[1]).map(([k, t]) => [k, Math.round((t / Math.max(1, total)) * 1000) / 10]);
}

/** Self time per function, or per source file with `byFile`, of the samples with a JavaScript frame or GC. */
export function hotFunctions(dir: string, top = 15, byFile = false): { fn: string; selfPct: number }[] {
  return shares(dir, (c) => {
    const name = c.functionName || '(anonymous)';
    if (name === '(idle)' || name === '(program)') return undefined;
    const where = c.url.replace(/^file:\/\/.*?\/(src|node_modules)\//, '$1/');
    return byFile ? where || name : `${name} ${where ? `(${where}${c.lineNumber >= 0 ? `:${c.lineNumber + 1}` : ''})` : ''}`.trim();
  })
    .slice(0, top)
    .map(([fn, selfPct]) => ({ fn, selfPct }));
}

/** The parts of a Node proxy's work a sample's own frame belongs to, first match wins. */
const PARTS: [string, (name: string, url: string) => boolean][] = [
  ['native, not attributed to a JS frame (TLS crypto, nghttp2, llhttp parsing, syscalls)', (n) => n === '(program)'],
  ['garbage collection', (n) => n === '(garbage collector)'],
  ["weft's own code", (_, u) => /\/(src|lib\/cli)\//.test(u) && !u.includes('node_modules')],
  ['Node HTTP/1.1 (server and client messages, headers)', (_, u) => /^node:(_http_|http$)/.test(u)],
  ['Node HTTP/2 and TLS (JS side)', (_, u) => /^node:(internal\/http2|_tls|tls$|internal\/tls)/.test(u)],
  ['socket writes and reads (native bindings)', (n, u) => !u && /^(writev|writeBuffer|writeString|writeUtf8String|writeLatin1String|latin1Write|utf8Write|readStart|readStop|onStreamRead)$/.test(n)],
  ['streams, events, timers, ticks and promises', (n, u) => /^node:(internal\/streams|events|internal\/process\/task_queues|internal\/timers|timers|internal\/stream_base_commons|stream)/.test(u) || n === 'runMicrotasks'],
  ['access log (pino, sonic-boom)', (_, u) => /node_modules\/(pino|sonic-boom|fast-redact|quick-format)/.test(u)],
  ['metrics library (prom-client)', (_, u) => u.includes('node_modules/prom-client')],
  ['xDS and CA clients (gRPC, protobuf)', (_, u) => /node_modules\/(@grpc|protobufjs|@protobufjs|long)/.test(u)],
  ['module loading and start-up', (_, u) => /^node:internal\/(modules|bootstrap|source_map|deps\/cjs)/.test(u)],
];

/** Self time per part of the work (PARTS), in percent of all non-idle samples. */
export function profileParts(dir: string): { part: string; selfPct: number }[] {
  return shares(dir, (c) => (c.functionName === '(idle)' ? undefined : (PARTS.find(([, test]) => test(c.functionName, c.url))?.[0] ?? 'other'))).map(([part, selfPct]) => ({ part, selfPct }));
}
