// The memory section of the agent's config_dump: the kernel's split of RSS next to V8's figures.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseProcStatus, processMemory } from '../../src/util/process-memory.ts';

const STATUS = `Name:\tnode
Threads:\t11
VmHWM:\t  101000 kB
VmRSS:\t   94500 kB
RssAnon:\t   47100 kB
RssFile:\t   47300 kB
RssShmem:\t     100 kB
VmSwap:\t       0 kB
`;

describe('process memory', () => {
  it('reads the split of RSS from a status text, in bytes', () => {
    expect(parseProcStatus(STATUS)).toEqual({ rss: 94500 * 1024, rssAnon: 47100 * 1024, rssFile: 47300 * 1024, rssShmem: 100 * 1024, vmHwm: 101000 * 1024, threads: 11 });
  });

  it("gives V8's figures with the kernel's, and V8's alone when the status cannot be read", () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-procmem-'));
    try {
      writeFileSync(join(dir, 'status'), STATUS);
      const m = processMemory(join(dir, 'status'));
      expect(m.rss).toBe(94500 * 1024);
      expect(m.rssAnon).toBe(47100 * 1024);
      expect(m.heapUsed).toBeGreaterThan(0);
      expect(m.heapTotal).toBeGreaterThanOrEqual(m.heapUsed);
      expect(m.external).toBeGreaterThan(0);
      const bare = processMemory(join(dir, 'missing'));
      expect(bare.rss).toBeGreaterThan(0);
      expect(bare.rssAnon).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("this process's own status on Linux", () => {
    const m = processMemory();
    // Read in one go by the kernel, but other threads allocate meanwhile: close, not equal.
    expect(Math.abs(m.rssAnon! + m.rssFile! + (m.rssShmem ?? 0) - m.rss)).toBeLessThan(4 << 20);
  });
});
