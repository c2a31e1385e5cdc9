// A proxy's log is batched: a quiet proxy's lines must still appear promptly, and nothing may
// be lost when the process exits with lines pending.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const script = `
import { batchedLogger } from ${JSON.stringify(join(import.meta.dirname, '../../src/telemetry/log.ts'))};
const log = batchedLogger({ component: 'test' });
log.info('first');
process.stdin.once('data', () => {
  for (let i = 0; i < 1000; i++) log.info({ i }, "burst"); // ~90 KiB: full batches, then the rest at exit
  process.exit(0);
});
`;

describe('agent log', () => {
  it('writes a lone line within the flush interval and flushes the rest at exit', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const deadline = Date.now() + 10_000;
      while (!out.includes('"first"') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(out).toContain('"msg":"first"'); // far below the 32 KiB batch, yet written
      child.stdin.write('go\n');
      await new Promise((r) => child.once('exit', r));
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; i?: number });
      expect(lines.filter((l) => l.msg === 'burst').map((l) => l.i)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('LineBatch', () => {
  it('hands lines on in batches of at least LOG_BATCH_CHARS, in order, and the rest on flush', async () => {
    const { LineBatch, LOG_BATCH_CHARS } = await import('../../src/telemetry/log.ts');
    const writes: string[] = [];
    const b = new LineBatch({ write: (s: string) => writes.push(s) });
    const line = (i: number) => `{"i":${i},"pad":"${'x'.repeat(90)}"}\n`;
    const n = Math.ceil((LOG_BATCH_CHARS * 2.5) / line(0).length);
    for (let i = 0; i < n; i++) b.write(line(i));
    expect(writes.length).toBe(2); // one write per full batch, not one per line
    for (const w of writes) expect(w.length).toBeGreaterThanOrEqual(LOG_BATCH_CHARS);
    expect(b.pending).toBeGreaterThan(0);
    b.flush();
    expect(b.pending).toBe(0);
    b.flush(); // nothing pending: no empty write
    expect(writes.length).toBe(3);
    expect(writes.join('')).toBe(Array.from({ length: n }, (_, i) => line(i)).join(''));
  });
});
