// Real servers the CNI plugin talks to in tests: a small Kubernetes API on loopback serving Pod and
// Namespace JSON, and an HTTP server on a Unix socket that records what the plugin sends to the
// agent's enrollment API (the API's contract; the agent itself is tested elsewhere).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Recorded {
  method: string;
  url: string;
  body: string;
  authorization?: string;
}

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (s += d));
    req.on('end', () => resolve(s));
  });

const listen = (server: Server, arg: string | number) => new Promise<void>((resolve) => server.listen(arg, resolve));

export class FakeKubeApi {
  readonly requests: Recorded[] = [];
  /** path -> [status, body] */
  readonly routes = new Map<string, [number, unknown]>();
  private server = createServer((req, res) => void this.handle(req, res));
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  pod(ns: string, name: string, uid: string, labels: Record<string, string> = {}, extra: Record<string, unknown> = {}) {
    this.routes.set(`/api/v1/namespaces/${ns}/pods/${name}`, [200, { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, uid, labels }, spec: { serviceAccountName: 'reviews', containers: [{ name: 'c', image: 'x' }], ...extra } }]);
  }

  namespace(name: string, labels: Record<string, string> = {}) {
    this.routes.set(`/api/v1/namespaces/${name}`, [200, { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }]);
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    this.requests.push({ method: req.method!, url: req.url!, body: await readBody(req), authorization: req.headers.authorization });
    const [status, body] = this.routes.get(req.url!) ?? [404, { kind: 'Status', message: `${req.url} not found`, code: 404 }];
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  }

  close() {
    this.server.close();
  }
}

/** Answers like the agent: PUT -> {enrolled}, DELETE -> {released}, GET /v1/pods -> {pods}. */
export class RecordingAgent {
  readonly requests: Recorded[] = [];
  /** Set to make the next PUTs fail with this status and error. */
  refuse?: [number, string];
  enrolled: { info: { uid: string } }[] = [];
  private server = createServer((req, res) => void this.handle(req, res));

  constructor(readonly socket: string) {}

  async start(): Promise<this> {
    await listen(this.server, this.socket);
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const body = await readBody(req);
    this.requests.push({ method: req.method!, url: req.url!, body });
    const reply = (code: number, v: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(v));
    if (req.method === 'PUT') {
      if (this.refuse) return reply(this.refuse[0], { error: this.refuse[1] });
      this.enrolled.push({ info: JSON.parse(body) as { uid: string } });
      return reply(200, { enrolled: true });
    }
    if (req.method === 'DELETE') return reply(200, { released: true });
    if (req.method === 'GET' && req.url === '/v1/pods') return reply(200, { pods: this.enrolled });
    reply(404, { error: 'no route' });
  }

  close() {
    this.server.close();
  }
}

/** A tmp dir with a kubeconfig (token in a file, as the installer writes it) and a cgroup tree. */
export function scratch(apiUrl: string) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-cni-'));
  writeFileSync(join(dir, 'token'), 'secret-token\n');
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'c',
      clusters: [{ name: 'k', cluster: { server: apiUrl } }],
      users: [{ name: 'u', user: { tokenFile: join(dir, 'token') } }],
      contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    }),
  );
  const cgroupRoot = join(dir, 'cgroup');
  mkdirSync(cgroupRoot);
  return { dir, kubeconfig, cgroupRoot, socket: join(dir, 'agent.sock'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
