// Benchmark HTTP server: answers every HTTP/1.1 request with 200 and a SIZE-byte body (after
// reading the request's body), keeping connections alive. The HTTP paths' counterpart of
// weft-load's echo server (weft-load.c): the same 1 KB each way, with HTTP/1.1 framing.
//   http-server.ts PORT [SIZE=1024]
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 8080);
const size = Number(process.argv[3] ?? 1024);
const body = Buffer.alloc(size, 0x61);
const headers = { 'content-type': 'application/octet-stream', 'content-length': String(size) };

// Connections idle between latency runs must not be closed under the client (Node's default
// keep-alive timeout is 5 s): the proxies in front keep their upstream connections in pools.
const server = createServer({ noDelay: true, keepAliveTimeout: 600_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, headers);
    res.end(body);
  });
});
server.on('clientError', (_e, s) => s.destroy());
server.listen(port, '0.0.0.0', () => console.log(JSON.stringify({ msg: 'http-server listening', port, size })));
