import { describe, expect, it } from 'vitest';
import { traceparent } from '../../../../src/agent/proxy/outbound/traceparent.ts';

describe('traceparent', () => {
  it('is W3C-shaped and never repeats, across refills of the random pool', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const t = traceparent();
      expect(t).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      seen.add(t.slice(3, 35));
      seen.add(t.slice(36, 52));
    }
    expect(seen.size).toBe(2000); // 1000 connections use ~6 pools of 4 KiB
  });
});
