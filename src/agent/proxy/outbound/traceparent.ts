// W3C traceparent for each outbound HBONE CONNECT (only the outbound path sends one). Random ids come from a pool refilled 4 KiB at
// a time: two randomBytes() calls per connection were ~1.5 % of the agent's CPU under a storm of
// new connections.
import { randomFillSync } from 'node:crypto';

const pool = Buffer.allocUnsafeSlow(4096);
let used = pool.length;

function take(n: number): string {
  if (used + n > pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  used += n;
  return pool.toString('hex', used - n, used);
}

/** "00-<trace id>-<span id>-01": a new sampled trace. */
export const traceparent = () => `00-${take(16)}-${take(8)}-01`;
