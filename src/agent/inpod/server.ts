// The enrollment API on a Unix socket, as istio-cni talks to ztunnel: the enroller (the lab, or a
// CNI plugin on a real node) sends a pod's identity, netns and cgroup; the reply comes only once
// capture and listeners are in place, so the pod's first packet is already captured.
//   PUT /v1/pods/<uid>  body: PodInfo   -> 200 {enrolled: true}
//   DELETE /v1/pods/<uid>               -> 200 {released: bool}
//   GET /v1/pods, GET /v1/workloads (the agent's view of the mesh), GET /healthz
import { chmodSync, rmSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { native } from '../../bpf/addon.ts';
import { ENROLLMENT_PATHS, validatePodInfo } from '../../api/enrollment.ts';
import { PodsFrozen, type PodManager } from './pod-manager.ts';

/** What the agent's mesh state says about workloads, for enrollers that wait for convergence. */
export type WorkloadSummary = () => { namespace: string; name: string; status: string }[];

/**
 * Resolves true once the agent has mesh state to serve from (synced, or restored from the node),
 * false if that did not happen within the wait: an enrolled pod would otherwise have its traffic
 * refused, or worse, passed through.
 */
export type WhenSynced = () => Promise<boolean>;

/**
 * While the agent hands over to its replacement, enrollments wait here: 'serve' when this agent
 * still owns its pods, 'forward' once the new agent does (the request goes to it, on the same socket).
 */
export type EnrollmentGate = () => Promise<'serve' | 'forward'>;

export interface EnrollmentOptions {
  workloads?: WorkloadSummary;
  whenSynced?: WhenSynced;
  /** The socket the agent before this one listened on (an upgrade): served as it is, never unlinked. */
  inheritedFd?: number;
  gate?: EnrollmentGate;
}

export function serveEnrollment(socketPath: string, pods: PodManager, log: Logger, o: EnrollmentOptions = {}): Promise<Server> {
  const workloads = o.workloads ?? (() => []);
  const whenSynced = o.whenSynced ?? (async () => true);
  const server = createServer((req, res) => {
    handle(req, res).catch((e: Error) => reply(res, 500, { error: e.message }));
  });
  /** Runs a pod operation, waiting out a handover (PodsFrozen); 'forward' once it completed. */
  async function held<T>(op: () => Promise<T>): Promise<T | 'forward'> {
    for (;;) {
      if ((await o.gate?.()) === 'forward') return 'forward';
      try {
        return await op();
      } catch (e) {
        if (!(e instanceof PodsFrozen)) throw e;
        if (!o.gate) throw e;
      }
    }
  }
  async function handle(req: IncomingMessage, res: ServerResponse) {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    const m = /^\/v1\/pods\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && path === ENROLLMENT_PATHS.health) return reply(res, 200, { ok: true, pid: process.pid });
    if (req.method === 'GET' && path === ENROLLMENT_PATHS.pods) return reply(res, 200, { pods: pods.list() });
    if (req.method === 'GET' && path === ENROLLMENT_PATHS.workloads) return reply(res, 200, { workloads: workloads() });
    if (req.method === 'PUT' && m) {
      let info;
      try {
        info = validatePodInfo(JSON.parse(await body(req)));
      } catch (e) {
        log.warn({ err: (e as Error).message }, 'bad enrollment request');
        return reply(res, 400, { error: (e as Error).message });
      }
      if (info.uid !== decodeURIComponent(m[1]!)) return reply(res, 400, { error: 'uid in path and body differ' });
      if (!(await whenSynced())) return reply(res, 503, { error: 'agent has no mesh state yet (not synced with the control plane); retry later' });
      const ok = await held(() => pods.enroll(info).then(() => true));
      if (ok === 'forward') return forward(socketPath, req, res, JSON.stringify(info));
      return reply(res, 200, { enrolled: true });
    }
    if (req.method === 'DELETE' && m) {
      const released = await held(() => pods.release(decodeURIComponent(m[1]!)));
      if (released === 'forward') return forward(socketPath, req, res);
      return reply(res, 200, { released });
    }
    reply(res, 404, { error: `no route ${req.method} ${path}` });
  }
  // Enrolling decides what a pod's traffic may do: only root (the CNI plugin, the lab) may ask,
  // whatever the socket file's mode or the directory it is in. Anything else is cut off before a
  // byte of its request is read.
  server.on('connection', (sock: Socket) => {
    const who = peerOf(sock);
    if (who.uid === 0) return;
    log.warn({ peer: who }, 'enrollment socket: connection from a non-root process refused');
    sock.destroy();
  });
  let fd = o.inheritedFd;
  if (fd === undefined) {
    // Bound here, not by Node, which would unlink the path when this server closes, even after
    // the socket was handed to the agent replacing this one.
    rmSync(socketPath, { force: true });
    fd = native().unixListen(socketPath);
    chmodSync(socketPath, 0o600); // only root may enroll pods
  }
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** A request this agent took while handing over, passed to the agent that serves the socket now. */
function forward(socketPath: string, req: IncomingMessage, res: ServerResponse, body?: string): void {
  const out = request({ socketPath, method: req.method, path: req.url, headers: body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}, agent: false }, (r) => {
    res.writeHead(r.statusCode ?? 502, { 'content-type': r.headers['content-type'] ?? 'application/json', connection: 'close' });
    r.pipe(res);
  });
  out.setTimeout(60_000, () => out.destroy(new Error('the agent now serving this node did not answer')));
  out.on('error', (e) => reply(res, 503, { error: `handed over to a new agent, which failed the request: ${e.message}` }));
  out.end(body);
}

/** The peer's SO_PEERCRED; uid -1 when it cannot be read (refused like any non-root peer). */
function peerOf(sock: Socket): { pid: number; uid: number; gid: number; error?: string } {
  const fd = (sock as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  try {
    if (typeof fd !== 'number' || fd < 0) throw new Error('no file descriptor');
    return native().peerCred(fd);
  } catch (e) {
    return { pid: -1, uid: -1, gid: -1, error: (e as Error).message };
  }
}

function body(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      s += d;
      if (s.length > 1 << 20) req.destroy(new Error('request too large'));
    });
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, code: number, v: unknown) {
  const s = JSON.stringify(v);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}
