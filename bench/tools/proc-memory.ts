// Where a process's resident memory is: the kernel's split (status), the mappings that hold it
// (smaps, grouped by file; anonymous ones by kind), and for the executable (the node binary) which
// of its sections and largest symbols are resident (pagemap: root). For finding what an agent's
// RSS is made of; not part of the bench.
//   node --import tsx bench/tools/proc-memory.ts PID [--symbols[=KB]]
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, readlinkSync } from 'node:fs';

const pid = process.argv[2];
if (!pid || !/^\d+$/.test(pid)) throw new Error('usage: proc-memory.ts PID [--symbols[=KB]]');
const SYMBOLS = process.argv.some((a) => a.startsWith('--symbols'));
// --symbols=KB: symbols of at least that size (default 256).
const SYMBOL_MIN = Number(process.argv.find((a) => a.startsWith('--symbols='))?.slice(10) ?? 256) * 1024;
const PAGE = 4096;
const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;

interface Mapping {
  start: number;
  end: number;
  perms: string;
  offset: number;
  path: string;
  kb: Record<string, number>;
}

function smaps(): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      cur = { start: parseInt(head[1]!, 16), end: parseInt(head[2]!, 16), perms: head[3]!, offset: parseInt(head[4]!, 16), path: head[5]!.trim(), kb: {} };
      out.push(cur);
      continue;
    }
    const f = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (f && cur) cur.kb[f[1]!] = Number(f[2]);
  }
  return out;
}

const status = readFileSync(`/proc/${pid}/status`, 'utf8');
const field = (n: string) => Number(new RegExp(`^${n}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024;
console.log(`pid ${pid}: VmRSS ${mb(field('VmRSS'))} MB = RssAnon ${mb(field('RssAnon'))} + RssFile ${mb(field('RssFile'))} + RssShmem ${mb(field('RssShmem'))}; threads ${/^Threads:\s+(\d+)/m.exec(status)?.[1]}`);

// Mappings grouped: files by path; anonymous ones by what they look like.
const maps = smaps();
const groups = new Map<string, { rss: number; anon: number; n: number }>();
for (const m of maps) {
  const size = m.end - m.start;
  let key = m.path;
  if (!key) key = m.perms.includes('x') ? '[anon exec: JIT code]' : size === 8 << 20 || size === (8 << 20) + PAGE ? '[anon 8 MiB: thread stacks]' : size >= 64 << 20 ? '[anon ≥64 MiB: malloc arenas / V8 reservations]' : '[anon other: V8 heap pages, mmapped malloc]';
  const g = groups.get(key) ?? { rss: 0, anon: 0, n: 0 };
  g.rss += (m.kb.Rss ?? 0) * 1024;
  g.anon += (m.kb.Anonymous ?? 0) * 1024;
  g.n++;
  groups.set(key, g);
}
console.log('\nresident by mapping (MB; anon = anonymous pages inside it):');
for (const [k, g] of [...groups].sort((a, b) => b[1].rss - a[1].rss)) if (g.rss >= 64 * 1024) console.log(`  ${String(mb(g.rss)).padStart(6)}  anon ${String(mb(g.anon)).padStart(5)}  ×${String(g.n).padEnd(4)} ${k}`);

// The executable's resident pages by section (and by its largest symbols with --symbols).
const exe = readlinkSync(`/proc/${pid}/exe`);
const sections: { name: string; addr: number; off: number; size: number }[] = [];
for (const line of execFileSync('readelf', ['-SW', exe], { encoding: 'utf8' }).split('\n')) {
  const m = /\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(line);
  if (m && parseInt(m[2]!, 16) !== 0) sections.push({ name: m[1]!, addr: parseInt(m[2]!, 16), off: parseInt(m[3]!, 16), size: parseInt(m[4]!, 16) });
}
const symbols: { name: string; off: number; size: number }[] = [];
if (SYMBOLS)
  for (const line of execFileSync('nm', ['-S', '--size-sort', '-C', exe], { encoding: 'utf8', maxBuffer: 1 << 30 }).split('\n')) {
    const m = /^([0-9a-f]+) ([0-9a-f]+) \w (.*)$/.exec(line);
    if (!m || parseInt(m[2]!, 16) < SYMBOL_MIN) continue;
    const addr = parseInt(m[1]!, 16);
    const s = sections.find((x) => addr >= x.addr && addr < x.addr + x.size);
    if (s) symbols.push({ name: m[3]!.slice(0, 80), off: addr - s.addr + s.off, size: parseInt(m[2]!, 16) });
  }
const bySection = new Map<string, number>();
const bySymbol = new Map<string, number>();
const pagemap = openSync(`/proc/${pid}/pagemap`, 'r');
try {
  for (const m of maps.filter((x) => x.path === exe)) {
    const pages = (m.end - m.start) / PAGE;
    const buf = Buffer.alloc(pages * 8);
    readSync(pagemap, buf, 0, buf.length, (m.start / PAGE) * 8);
    for (let i = 0; i < pages; i++) {
      if (!(buf.readBigUInt64LE(i * 8) >> 63n)) continue; // not present
      const off = m.offset + i * PAGE;
      const s = sections.find((x) => off + PAGE > x.off && off < x.off + x.size);
      bySection.set(s?.name ?? '(headers, padding)', (bySection.get(s?.name ?? '(headers, padding)') ?? 0) + PAGE);
      const y = symbols.find((x) => off + PAGE > x.off && off < x.off + x.size);
      if (y) bySymbol.set(y.name, (bySymbol.get(y.name) ?? 0) + PAGE);
    }
  }
} finally {
  closeSync(pagemap);
}
console.log(`\n${exe}: resident by section (MB of size):`);
for (const [k, v] of [...bySection].sort((a, b) => b[1] - a[1])) console.log(`  ${String(mb(v)).padStart(6)} of ${String(mb(sections.find((s) => s.name === k)?.size ?? 0)).padStart(6)}  ${k}`);
if (SYMBOLS) {
  console.log(`\nlargest symbols (≥ ${SYMBOL_MIN / 1024} KiB), resident:`);
  for (const [k, v] of [...bySymbol].sort((a, b) => b[1] - a[1])) if (v >= 64 * 1024) console.log(`  ${String(mb(v)).padStart(6)} of ${String(mb(symbols.find((s) => s.name === k)!.size)).padStart(6)}  ${k}`);
}
