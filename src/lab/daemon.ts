// The lab daemon: owns a lab's cluster for as long as it runs and answers the CLI over a Unix
// socket (HTTP/JSON). `weft up` starts it detached; `weft down` asks it to stop.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { Cluster, type ClusterOptions } from './cluster.ts';
import { cgroup2Mount } from '../bpf/mounts.ts';
import { LabLayout } from './layout.ts';
import type { KObject } from '../kube/objects.ts';

export async function runLabDaemon(name: string, nodeCount: number, capture: ClusterOptions['capture'], certTtl?: number): Promise<void> {
  const layout = new LabLayout(name);
  const log = pino({ base: { lab: name } });
  mkdirSync(layout.stateDir, { recursive: true });
  writeFileSync(layout.pidFile, String(process.pid));
  // The daemon lives in the lab's cgroup tree so `weft down` finds it even if the pid file is lost.
  const daemonCg = join(layout.cgroupRoot(cgroup2Mount()), 'daemon');
  mkdirSync(daemonCg, { recursive: true });
  writeFileSync(join(daemonCg, 'cgroup.procs'), String(process.pid));

  const cluster = new Cluster(layout, { capture, certTtl });
  cluster.on('log', (l: { level: 'error' | 'info'; msg: string }) => log[l.level](l.msg));
  let ready = false;
  let initError: string | undefined;
  let stopping = false;

  const server = createServer((req, res) => {
    handle(req, res).catch((e: Error) => reply(res, 500, { error: e.message }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://lab');
    if (req.method === 'GET' && url.pathname === '/v1/status') return reply(res, 200, { ready, initError, nodes: cluster.nodes.length, generation: cluster.generation });
    if (!ready) return reply(res, 503, { error: initError ?? 'lab is starting' });
    if (req.method === 'GET' && url.pathname === '/v1/state') return reply(res, 200, cluster.snapshot());
    if (req.method === 'GET' && url.pathname === '/v1/mesh-sync') return reply(res, 200, { converged: await cluster.meshConverged() });
    if (req.method === 'GET' && url.pathname === '/v1/pod') {
      const p = cluster.podPlacement(url.searchParams.get('namespace') ?? 'default', url.searchParams.get('name') ?? '');
      return p ? reply(res, 200, p) : reply(res, 404, { error: 'pod not found' });
    }
    if (req.method === 'POST' && url.pathname === '/v1/apply') {
      const body = (await readJson(req)) as { objects: KObject[] };
      const out = await cluster.apply(body.objects);
      for (const o of out) log.info({ object: o.object, result: o.result, error: o.error }, 'apply');
      return reply(res, 200, { results: out });
    }
    if (req.method === 'POST' && url.pathname === '/v1/delete') {
      const body = (await readJson(req)) as { objects: KObject[] };
      return reply(res, 200, { results: await cluster.delete(body.objects) });
    }
    const agent = /^\/v1\/agents\/([^/]+)\/(kill|start|upgrade)$/.exec(url.pathname);
    if (req.method === 'POST' && agent) {
      const r = await cluster.agentControl(agent[1]!, agent[2] as 'kill' | 'start' | 'upgrade');
      return reply(res, 200, { ok: true, ...(r ?? {}) });
    }
    const cp = /^\/v1\/control\/(kill|start)$/.exec(url.pathname);
    if (req.method === 'POST' && cp) {
      await cluster.controlPlaneControl(cp[1] as 'kill' | 'start');
      return reply(res, 200, { ok: true });
    }
    if (req.method === 'POST' && url.pathname === '/v1/control/upgrade') return reply(res, 200, await cluster.controlPlaneUpgrade());
    if (req.method === 'POST' && url.pathname === '/v1/shutdown') {
      reply(res, 200, { ok: true });
      void stop('shutdown requested');
      return;
    }
    reply(res, 404, { error: `no route ${req.method} ${url.pathname}` });
  }

  async function stop(why: string) {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'lab stopping');
    server.close();
    await cluster.shutdown().catch((e: Error) => log.error(e.message));
    rmSync(layout.socketPath, { force: true });
    process.exit(0);
  }
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  rmSync(layout.socketPath, { force: true });
  await new Promise<void>((r) => server.listen(layout.socketPath, r));
  log.info({ nodes: nodeCount, capture }, 'lab starting');
  try {
    await cluster.init(nodeCount);
    ready = true;
    log.info('lab ready');
  } catch (e) {
    initError = (e as Error).message;
    log.error({ err: initError }, 'lab failed to start');
  }
}

function reply(res: ServerResponse, code: number, body: unknown) {
  const s = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (s += d));
    req.on('end', () => {
      try {
        resolve(JSON.parse(s || '{}'));
      } catch (e) {
        reject(e as Error);
      }
    });
    req.on('error', reject);
  });
}
