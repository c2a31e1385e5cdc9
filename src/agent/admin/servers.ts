// Admin endpoints, apart from the proxy listeners so a slow scrape never touches traffic:
// :15020 /metrics (and /stats/prometheus), :15021 /healthz/ready, 127.0.0.1:15000 /config_dump.
import { createServer, type Server } from 'node:http';
import type { AgentMetrics } from '../metrics/metrics.ts';
import type { NodeListenerFds } from '../handover/protocol.ts';

export interface AdminOptions {
  metricsAddress: string;
  metricsPort: number;
  readinessPort: number;
  adminPort: number;
  metrics: AgentMetrics;
  configDump: () => unknown;
  ready: () => boolean;
  /** The listeners of the agent before this one (an upgrade): the same sockets, served here now. */
  inherited?: NodeListenerFds;
}

function listen(server: Server, port: number, host: string, fd?: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(new Error(`cannot listen on ${host}:${port}: ${e.message}`)));
    if (fd !== undefined) server.listen({ fd }, () => resolve(server));
    else server.listen(port, host, () => resolve(server));
  });
}

/** The metrics, readiness and admin servers, in that order. */
export async function serveAdmin(o: AdminOptions): Promise<[Server, Server, Server]> {
  const metrics = createServer((req, res) => {
    if (req.url === '/metrics' || req.url === '/stats/prometheus') {
      o.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.metrics.registry.contentType });
          res.end(text);
        },
        (e: Error) => {
          res.writeHead(500);
          res.end(e.message);
        },
      );
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const readiness = createServer((req, res) => {
    const ok = req.url === '/healthz/ready' && o.ready();
    res.writeHead(req.url === '/healthz/ready' ? (ok ? 200 : 503) : 404);
    res.end(ok ? 'ready\n' : '');
  });
  const admin = createServer((req, res) => {
    if (req.url === '/config_dump') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o.configDump(), null, 2));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const fd = o.inherited ?? {};
  const [m, r, a] = await Promise.all([
    listen(metrics, o.metricsPort, o.metricsAddress, fd.metrics),
    listen(readiness, o.readinessPort, o.metricsAddress, fd.readiness),
    listen(admin, o.adminPort, '127.0.0.1', fd.admin),
  ]);
  return [m, r, a];
}
