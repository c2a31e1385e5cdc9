// Built-in image `weft/echo`: an HTTP server that reports who answered and who called, so lab
// users can see where their traffic went. Port from $PORT (default 8080).
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.env.PORT ?? 8080);
const self = {
  pod: process.env.POD_NAME ?? process.env.HOSTNAME ?? 'unknown',
  namespace: process.env.POD_NAMESPACE ?? 'default',
  node: process.env.NODE_NAME ?? '',
  podIP: process.env.POD_IP ?? '',
};

// Behaviours for resilience tests, as httpbin-style echo servers offer: `?status=N` answers N,
// `?delay=MS` answers after MS (capped at 60 s), `/flaky` fails every other request with 503, and
// ECHO_STATUS makes the pod answer every request with that status (a broken pod).
const podStatus = Number(process.env.ECHO_STATUS ?? 0) || undefined;
let flaky = 0;
const asked = (url: URL) => {
  const s = Number(url.searchParams.get('status') ?? '');
  return Number.isInteger(s) && s >= 200 && s <= 599 ? s : undefined;
};

const server = createServer((req, res) => {
  let bytes = 0;
  const url = URL.canParse(req.url ?? '/', 'http://echo') ? new URL(req.url ?? '/', 'http://echo') : new URL('http://echo/');
  const status = podStatus ?? asked(url) ?? (url.pathname === '/flaky' && flaky++ % 2 === 0 ? 503 : 200);
  const delay = Math.min(60_000, Math.max(0, Number(url.searchParams.get('delay') ?? 0) || 0));
  req.on('data', (d: Buffer) => (bytes += d.length));
  req.on('end', () => setTimeout(answer, delay));
  const answer = () => {
    if (res.destroyed) return;
    const body = JSON.stringify({
      ...self,
      client: `${(req.socket.remoteAddress ?? '').replace(/^::ffff:(?=\d+\.)/, '')}:${req.socket.remotePort}`,
      method: req.method,
      path: req.url,
      headers: req.headers,
      requestBytes: bytes,
    });
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
});
server.keepAliveTimeout = 65_000;
// WebSocket on any path: each message comes back prefixed with the pod's name.
const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data, binary) => ws.send(binary ? data : `${self.pod}: ${String(data)}`));
  });
});
const listening = () => console.log(JSON.stringify({ msg: 'echo listening', port, ...self }));
// Dual stack ([::], which takes IPv4 too), or IPv4 alone where the pod has no IPv6.
const noIpv6 = (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EAFNOSUPPORT' && e.code !== 'EADDRNOTAVAIL') throw e;
  server.listen(port, '0.0.0.0', listening);
};
server.once('error', noIpv6);
server.listen({ port, host: '::', ipv6Only: false }, () => {
  server.off('error', noIpv6);
  listening();
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
