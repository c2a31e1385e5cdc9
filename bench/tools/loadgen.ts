// Constant-rate request/response load over a fixed set of connections, with latency measured
// from each request's *intended* send time, so a stall is charged to every request it delayed
// (no coordinated omission). Prints one JSON line: percentiles in microseconds.
//   loadgen.ts HOST PORT RATE CONNECTIONS SECONDS [SIZE=1024] [WARMUP_SECONDS=1]
import { connect, type Socket } from 'node:net';
import { histogram, loadArgs, paced, percentiles } from './pacer.ts';

const { host, port, rate, conns, seconds, size, warmup } = loadArgs(process.argv.slice(2), 'loadgen.ts HOST PORT RATE CONNECTIONS SECONDS [SIZE] [WARMUP_SECONDS]');
const payload = Buffer.alloc(size, 0x62);
const hist = histogram();

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

// Request i is due at start + i/rate, on connection i % conns (pacer.ts keeps the clock).
const total = Math.round(rate * (seconds + warmup));
await paced(start, total, 1e9 / rate, (i, due) => {
  const c = all[i % conns]!;
  c.queue.push(due);
  c.sock.write(payload);
});
// Drain: wait for outstanding responses (bounded).
const deadline = Date.now() + 10_000;
while (all.some((c) => c.queue.length > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
const lost = all.reduce((a, c) => a + c.queue.length, 0);
for (const c of all) c.sock.destroy();
console.log(JSON.stringify({ rate, connections: conns, seconds, completed, lost, errors, ...percentiles(hist) }));
