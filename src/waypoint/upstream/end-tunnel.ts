// Closing an upstream HBONE tunnel whose exchange completed: END_STREAM, not RST_STREAM. Destroying
// an open HTTP/2 stream resets it, and a server counts the resets its peer sends: nghttp2 (Node's
// HTTP/2, >= 1.57) answers more than a burst of 1000 (then 33 a second) with GOAWAY(INTERNAL_ERROR)
// as a rapid-reset attack (CVE-2023-44487), failing every request then in flight on the session.
// A reset per request would trip that within seconds under load. Failures still reset (destroy()).
import type { Duplex } from 'node:stream';

/** How long the far side may take to end its half (its endpoint closes after a `Connection: close` response). */
export const END_GRACE_MS = 1000;

/** Ends our half and lets the far side end its own; destroyed (a reset) only if it has not within `graceMs`. */
export function endTunnel(t: Duplex, graceMs = END_GRACE_MS): void {
  if (t.destroyed) return;
  // Even with both halves ended, destroy() now could reset a stream whose END_STREAM is still queued:
  // the stream closes by itself once both are through, and the timer is only for a far side that never ends.
  const timer = setTimeout(() => t.destroy(), graceMs).unref();
  t.once('close', () => clearTimeout(timer));
  t.resume(); // the stream closes only once its readable half has ended: drop what is left
  if (t.writable) t.end();
}
