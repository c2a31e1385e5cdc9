// Constant-rate request/response load over a fixed set of connections, with latency measured
// from each request's *intended* send time, so a stall is charged to every request it delayed
// (no coordinated omission). Prints one JSON line: percentiles in microseconds.
//   loadgen.ts HOST PORT RATE CONNECTIONS SECONDS [SIZE=1024] [WARMUP_SECONDS=1]
import { connect, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';

const [host, portS, rateS, connsS, secsS, sizeS, warmS] = process.argv.slice(2);
const port = Number(portS);
const rate = Number(rateS);
const conns = Number(connsS);
const seconds = Number(secsS);
const size = Number(sizeS ?? 1024);
const warmup = Number(warmS ?? 1);
const payload = Buffer.alloc(size, 0x62);
const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });

interface Conn {
  sock: Socket;
  queue: bigint[]; // intended send times of requests in flight, in order
  got: number;
}

const open = (): Promise<Conn> =>
  new Promise((resolve, reject) => {
    const sock = connect({ host, port, noDelay: true }, () => resolve(c));
    const c: Conn = { sock, queue: [], got: 0 };
    sock.on('error', reject);
  });

const all = await Promise.all(Array.from({ length: conns }, open));
const start = process.hrtime.bigint();
const measureFrom = start + BigInt(Math.round(warmup * 1e9));
let completed = 0;
let errors = 0;
for (const c of all) {
  c.sock.on('data', (d: Buffer) => {
    c.got += d.length;
    while (c.got >= size) {
      c.got -= size;
      const intended = c.queue.shift()!;
      const now = process.hrtime.bigint();
      if (intended >= measureFrom) {
        hist.recordValue(Number(now - intended) / 1000);
        completed++;
      }
    }
  });
  c.sock.on('error', () => errors++);
}

// Schedule: request i is due at start + i/rate, on connection i % conns. Node's timers have
// millisecond resolution and fire up to a millisecond late, which put ~0.9 ms of lateness into
// every path's p50 and sent requests in bursts. A worker thread keeps the clock instead: it
// sleeps in Atomics.wait (a futex with a sub-millisecond timeout, no spinning) until the next due
// time and wakes this thread with a message, which sends every request due by then, each still
// timed from its own due time.
const total = Math.round(rate * (seconds + warmup));
const intervalNs = 1e9 / rate;
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
      const c = all[next % conns]!;
      c.queue.push(due(next));
      c.sock.write(payload);
      next++;
    }
    if (next >= total) resolve();
  });
});
await pacer.terminate();
// Drain: wait for outstanding responses (bounded).
const deadline = Date.now() + 10_000;
while (all.some((c) => c.queue.length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
const lost = all.reduce((a, c) => a + c.queue.length, 0);
for (const c of all) c.sock.destroy();
const p = (q: number) => Math.round(hist.getValueAtPercentile(q));
console.log(JSON.stringify({ rate, connections: conns, seconds, completed, lost, errors, p50: p(50), p90: p(90), p99: p(99), p999: p(99.9), max: Math.round(hist.maxValue) }));
