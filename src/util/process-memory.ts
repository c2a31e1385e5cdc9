// This process's memory, for admin endpoints: V8's view (process.memoryUsage()) next to the
// kernel's (/proc/self/status). VmRSS alone hides what matters for sizing: file pages (the node
// binary's code, shared and reclaimable) against anonymous memory (heap, glibc, stacks).
import { readFileSync } from 'node:fs';

/** Bytes. The kernel's fields are absent where /proc is not Linux's. */
export interface ProcessMemory {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rssAnon?: number;
  rssFile?: number;
  rssShmem?: number;
  vmHwm?: number;
  threads?: number;
}

const KB_FIELDS = { VmRSS: 'rss', RssAnon: 'rssAnon', RssFile: 'rssFile', RssShmem: 'rssShmem', VmHWM: 'vmHwm' } as const;

/** The fields of a /proc/<pid>/status text that ProcessMemory carries (kB turned into bytes). */
export function parseProcStatus(text: string): Partial<ProcessMemory> {
  const out: Partial<ProcessMemory> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s+(\d+)(?: kB)?$/.exec(line.trim());
    if (!m) continue;
    const [, name, value] = m as unknown as [string, string, string];
    if (name in KB_FIELDS) out[KB_FIELDS[name as keyof typeof KB_FIELDS]] = Number(value) * 1024;
    else if (name === 'Threads') out.threads = Number(value);
  }
  return out;
}

export function processMemory(statusFile = '/proc/self/status'): ProcessMemory {
  const u = process.memoryUsage();
  let kernel: Partial<ProcessMemory> = {};
  try {
    kernel = parseProcStatus(readFileSync(statusFile, 'utf8'));
  } catch {}
  return { heapTotal: u.heapTotal, heapUsed: u.heapUsed, external: u.external, arrayBuffers: u.arrayBuffers, ...kernel, rss: kernel.rss ?? u.rss };
}
