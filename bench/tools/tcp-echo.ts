// Benchmark server: answers every request of SIZE bytes with SIZE bytes, on as many connections
// as clients open. The same 1 KB request/response shape for every path measured.
//   tcp-echo.ts PORT [SIZE=1024]
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7000);
const size = Number(process.argv[3] ?? 1024);
const reply = Buffer.alloc(size, 0x61);

createServer({ noDelay: true }, (s) => {
  let pending = 0;
  s.on('data', (d: Buffer) => {
    pending += d.length;
    while (pending >= size) {
      pending -= size;
      s.write(reply);
    }
  });
  s.on('error', () => {});
}).listen(port, '0.0.0.0', () => console.log(JSON.stringify({ msg: 'tcp-echo listening', port, size })));
