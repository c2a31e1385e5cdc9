// The agent hands free malloc pages back once it has been quiet after a burst of work
// (src/agent/admin/idle-trim.ts), never while pokes keep coming, and only after something happened.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { IdleTrim } from '../../../src/agent/admin/idle-trim.ts';
import { mallocTrim } from '../../../src/bpf/index.ts';

afterEach(() => {
  vi.useRealTimers();
});

describe('idle trim', () => {
  it('trims once after a burst has been quiet for the period, not during it, and not without a poke', () => {
    vi.useFakeTimers();
    const trim = vi.fn(() => true);
    const t = new IdleTrim(trim, 30_000);
    vi.advanceTimersByTime(120_000);
    expect(trim).not.toHaveBeenCalled(); // nothing happened: nothing to give back
    for (let i = 0; i < 10; i++) {
      t.poke(); // a burst of enrollments, 10 s apart: each one postpones the trim
      vi.advanceTimersByTime(10_000);
    }
    expect(trim).not.toHaveBeenCalled();
    expect(t.stats()).toMatchObject({ trims: 0, pending: true });
    vi.advanceTimersByTime(20_000);
    expect(trim).toHaveBeenCalledTimes(1);
    expect(t.stats()).toMatchObject({ trims: 1, pending: false });
    vi.advanceTimersByTime(300_000);
    expect(trim).toHaveBeenCalledTimes(1);
    t.poke();
    t.close();
    vi.advanceTimersByTime(60_000);
    expect(trim).toHaveBeenCalledTimes(1); // closed: the pending trim is dropped
  });

  it('returns free heap pages through the native addon, and the process carries on', () => {
    // Many small blocks, most freed: their pages sit inside the heap, below live ones.
    const keep: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) {
      const b = Buffer.allocUnsafeSlow(1024);
      if (i % 50 === 0) keep.push(b);
    }
    expect(typeof mallocTrim()).toBe('boolean');
    expect(Buffer.concat(keep).length).toBe(keep.length * 1024);
  });
});
