// Large first-sync responses take turns; small deltas never wait; a client that never reads cannot
// hold a slot forever.
import { describe, expect, it } from 'vitest';
import { SendGate } from '../../../src/control/xds/send-gate.ts';

describe('SendGate', () => {
  it('lets at most `slots` large writes run, in arrival order, and never holds small ones', () => {
    const gate = new SendGate(2, 100, 60_000);
    const started: string[] = [];
    const done = new Map<string, () => void>();
    for (const id of ['a', 'b', 'c', 'd']) gate.run(1000, (d) => (started.push(id), done.set(id, d)));
    expect(started).toEqual(['a', 'b']);
    gate.run(10, () => started.push('small'));
    expect(started).toEqual(['a', 'b', 'small']);
    done.get('b')!();
    done.get('b')!(); // twice frees one slot, not two
    expect(started).toEqual(['a', 'b', 'small', 'c']);
    done.get('a')!();
    expect(started).toEqual(['a', 'b', 'small', 'c', 'd']);
  });

  it('frees a slot after the hold time even if the write never completes', async () => {
    const gate = new SendGate(1, 100, 50);
    const started: string[] = [];
    gate.run(1000, () => started.push('stuck'));
    gate.run(1000, () => started.push('next'));
    expect(started).toEqual(['stuck']);
    const end = Date.now() + 2000;
    while (started.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual(['stuck', 'next']);
  });
});
