// What `drain(deadlineMs)` means on either server (node/server.ts, native/server.ts): the deadline
// after which sessions still open are closed, checked here once so both data paths read it alike.
import { DRAIN_DEADLINE_MS } from '../settings.ts';

/** setTimeout's largest delay; past it Node fires at once, which would turn a long drain into none. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `deadlineMs`: milliseconds from the drain's start (0: close at once, after the GOAWAY), Infinity
 * for none (every stream runs to its end, however long), undefined for DRAIN_DEADLINE_MS.
 * Anything else is a RangeError naming it.
 */
export function drainDeadline(deadlineMs: number | undefined): number {
  const ms = deadlineMs ?? DRAIN_DEADLINE_MS;
  if (ms === Infinity || (Number.isFinite(ms) && ms >= 0 && ms <= MAX_TIMER_MS)) return ms;
  throw new RangeError(`HBONE drain: deadlineMs must be 0 to ${MAX_TIMER_MS} ms or Infinity, not ${String(deadlineMs)}`);
}

/** Runs `expire` at the deadline (never for Infinity); the timer to clear once the drain is done. */
export function atDeadline(ms: number, expire: () => void): NodeJS.Timeout | undefined {
  return ms === Infinity ? undefined : setTimeout(expire, ms);
}
