// New connections per second: each of CONCURRENCY workers loops connect, one SIZE-byte request
// and response, close, for SECONDS. Prints one JSON line.
//   connrate.ts HOST PORT CONCURRENCY SECONDS [SIZE=1024]
import { connect } from 'node:net';

const [host, portS, concS, secsS, sizeS] = process.argv.slice(2);
const port = Number(portS);
const size = Number(sizeS ?? 1024);
const payload = Buffer.alloc(size, 0x63);
const end = Date.now() + Number(secsS) * 1000;
let done = 0;
let errors = 0;

const once = () =>
  new Promise<void>((resolve) => {
    let got = 0;
    const s = connect({ host, port, noDelay: true }, () => s.write(payload));
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= size) {
        done++;
        s.end();
      }
    });
    s.on('error', () => {
      errors++;
      resolve();
    });
    s.on('close', () => resolve());
  });

const t0 = process.hrtime.bigint();
await Promise.all(
  Array.from({ length: Number(concS) }, async () => {
    while (Date.now() < end) await once();
  }),
);
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ connections: done, errors, seconds: secs, conn_per_s: Math.round(done / secs) }));
