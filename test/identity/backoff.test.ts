import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/identity/backoff.ts';

describe('backoffDelay', () => {
  it('doubles from 500 ms, is capped at 30 s, and jitters within ±20 %', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4].map((n) => backoffDelay(n, {}, mid))).toEqual([500, 1000, 2000, 4000]);
    expect(backoffDelay(20, {}, mid)).toBe(30_000);
    expect(backoffDelay(1000, {}, mid)).toBe(30_000);
    expect(backoffDelay(1, {}, () => 0)).toBe(400);
    expect(backoffDelay(1, {}, () => 1)).toBe(600);
    expect(backoffDelay(20, { capMs: 1000 }, () => 1)).toBe(1000);
  });
});
