// A bounded wait for tests, on the project's waitFor: fails saying what it waited for.
import { waitFor } from '../../src/util/sleep.ts';

export async function until(what: string, fn: () => boolean, timeoutMs = 5000, intervalMs = 10): Promise<void> {
  if (!(await waitFor(fn, timeoutMs, intervalMs))) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
