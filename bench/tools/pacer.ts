// The soak's constant-rate clock and histogram (soak-loadgen.ts; `make bench` uses weft-load.c):
// every request is timed from its *intended* send time, so a stall is charged to every request it
// delayed (no coordinated omission).
import { Worker } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';

/** Latency in microseconds, up to a minute, three significant digits. */
export const histogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });

/**
 * Calls send(i, due) for requests 0 … total-1, request i due at start + i × intervalNs; resolves
 * after the last. Node's timers have millisecond resolution and fire up to a millisecond late,
 * which put ~0.9 ms of lateness into every path's p50 and sent requests in bursts. A worker thread
 * keeps the clock instead: it sleeps in Atomics.wait (a futex with a sub-millisecond timeout, no
 * spinning) until the next due time and wakes this thread with a message, which sends every
 * request due by then, each still timed from its own due time.
 */
export async function paced(start: bigint, total: number, intervalNs: number, send: (i: number, due: bigint) => void): Promise<void> {
  const due = (i: number) => start + BigInt(Math.round(i * intervalNs));
  const pacer = new Worker(
    `const { parentPort, workerData: w } = require('node:worker_threads');
     const nap = new Int32Array(new SharedArrayBuffer(4));
     const start = BigInt(w.start);
     for (let i = 0; i < w.total; i++) {
       const wait = Number(start + BigInt(Math.round(i * w.intervalNs)) - process.hrtime.bigint()) / 1e6;
       if (wait > 0.02) Atomics.wait(nap, 0, 0, wait);
       parentPort.postMessage(i);
     }`,
    { eval: true, workerData: { start: String(start), total, intervalNs } },
  );
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    pacer.on('error', reject);
    pacer.on('message', () => {
      const now = process.hrtime.bigint();
      while (next < total && due(next) <= now) {
        send(next, due(next));
        next++;
      }
      if (next >= total) resolve();
    });
  });
  await pacer.terminate();
}

/** The percentiles every load generator prints, in microseconds. */
export function percentiles(h: ReturnType<typeof histogram>) {
  const p = (q: number) => Math.round(h.getValueAtPercentile(q));
  return { p50: p(50), p90: p(90), p99: p(99), p999: p(99.9), max: Math.round(h.maxValue) };
}
