// Exponential backoff with jitter, so a fleet of agents does not retry a recovering CA in step.
export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
}

/** Delay before retry number `failures` (1 = first retry): base·2^(n-1), ±20 %, at most cap. */
export function backoffDelay(failures: number, o: BackoffOptions = {}, random = Math.random): number {
  const base = o.baseMs ?? 500;
  const cap = o.capMs ?? 30_000;
  const exp = base * 2 ** Math.min(Math.max(failures - 1, 0), 30);
  return Math.round(Math.min(cap, exp * (0.8 + 0.4 * random())));
}
