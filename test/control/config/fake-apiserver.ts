// A Kubernetes API server double, enough for informers: list and watch of cluster-wide
// collections, one resourceVersion counter across all of them (as etcd), bookmarks, a compacted
// history answering too-old watches with a 410 ERROR event, and 404 for resources not installed.
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';

export interface FakeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  [k: string]: unknown;
}

interface Collection {
  kind: string;
  apiVersion: string;
  installed: boolean;
  objects: Map<string, FakeObject>; // ns/name
}

interface Watcher {
  path: string;
  res: ServerResponse;
  bookmarks: boolean;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const status = (code: number, reason: string, message: string) => ({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

export class FakeApiServer {
  /** Every request, to check what the client asked for. */
  readonly requests: { path: string; query: URLSearchParams; authorization?: string }[] = [];
  /** Watches answered with 410 Gone. */
  gone = 0;
  /** While set, new watches fail with 503 (a broken connection the client must retry). */
  refuseWatches = false;
  private rv = 1000;
  private compactedRv = 0;
  private history: { rv: number; path: string; type: EventType; object: FakeObject }[] = [];
  private collections = new Map<string, Collection>(); // by collection path
  private watchers = new Set<Watcher>();
  private server!: Server;
  port = 0;

  static async start(): Promise<FakeApiServer> {
    const s = new FakeApiServer();
    s.server = createServer((req, res) => s.handle(req, res));
    await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', r));
    s.port = (s.server.address() as AddressInfo).port;
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get resourceVersion(): number {
    return this.rv;
  }

  /** Open watches. */
  get watching(): number {
    return this.watchers.size;
  }

  /** Serves a resource; `installed: false` answers 404 as for a CRD that is not there. */
  serve(r: { kind: string; apiVersion: string; plural: string }, installed = true): void {
    this.collections.set(this.pathOf(r), { kind: r.kind, apiVersion: r.apiVersion, installed, objects: new Map() });
  }

  install(kind: string): void {
    this.collectionOf(kind)[1].installed = true;
  }

  /** Creates or replaces an object (by kind/namespace/name), bumping the resourceVersion. */
  apply(obj: FakeObject): FakeObject {
    const [path, c] = this.collectionOf(obj.kind);
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const prev = c.objects.get(key);
    const stored: FakeObject = structuredClone(obj);
    stored.metadata = { ...stored.metadata, uid: prev?.metadata.uid ?? randomUUID(), resourceVersion: String(++this.rv) };
    c.objects.set(key, stored);
    this.record(path, prev ? 'MODIFIED' : 'ADDED', stored);
    return stored;
  }

  remove(kind: string, namespace: string | undefined, name: string): void {
    const [path, c] = this.collectionOf(kind);
    const key = `${namespace ?? ''}/${name}`;
    const prev = c.objects.get(key);
    if (!prev) throw new Error(`no ${kind} ${key}`);
    c.objects.delete(key);
    this.record(path, 'DELETED', { ...prev, metadata: { ...prev.metadata, resourceVersion: String(++this.rv) } });
  }

  /** Sends every watcher that asked for bookmarks the current resourceVersion. */
  bookmark(): void {
    for (const w of this.watchers) {
      const c = this.collections.get(w.path)!;
      if (w.bookmarks) this.send(w.res, 'BOOKMARK', { apiVersion: c.apiVersion, kind: c.kind, metadata: { name: '', resourceVersion: String(this.rv) } });
    }
  }

  /** Forgets history: a watch from an older resourceVersion now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** Ends every open watch, as a server restart or a dropped connection would. */
  dropWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** A kubeconfig pointing at this server (plain HTTP, a token to check it is sent). */
  writeKubeconfig(dir: string): string {
    const file = join(dir, 'kubeconfig');
    writeFileSync(
      file,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'fake', user: { token: 'fake-token' } }],
        contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
        'current-context': 'fake',
      }),
    );
    return file;
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private pathOf(r: { apiVersion: string; plural: string }): string {
    return `${r.apiVersion.includes('/') ? '/apis' : '/api'}/${r.apiVersion}/${r.plural}`;
  }

  private collectionOf(kind: string): [string, Collection] {
    for (const e of this.collections) if (e[1].kind === kind) return e;
    throw new Error(`fake API server does not serve ${kind}`);
  }

  private record(path: string, type: EventType, object: FakeObject): void {
    this.history.push({ rv: this.rv, path, type, object });
    for (const w of this.watchers) if (w.path === path) this.send(w.res, type, object);
  }

  private send(res: ServerResponse, type: string, object: unknown): void {
    res.write(JSON.stringify({ type, object }) + '\n');
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    this.requests.push({ path: url.pathname, query: url.searchParams, authorization: req.headers.authorization });
    const json = (code: number, body: unknown) => void res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const c = this.collections.get(url.pathname);
    if (req.method !== 'GET') return json(405, status(405, 'MethodNotAllowed', 'read-only'));
    if (!c || !c.installed) return json(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    if (url.searchParams.get('watch') !== 'true') {
      // List items carry no apiVersion/kind, as from the real server.
      const items = [...c.objects.values()].map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
      return json(200, { kind: `${c.kind}List`, apiVersion: c.apiVersion, metadata: { resourceVersion: String(this.rv) }, items });
    }
    if (this.refuseWatches) return json(503, status(503, 'ServiceUnavailable', 'watches refused for the test'));
    const from = Number(url.searchParams.get('resourceVersion') || '0');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders(); // the client waits for headers before it counts the watch as open
    if (from > 0 && from < this.compactedRv) {
      // The API server answers 200 and then a single ERROR event carrying the 410 Status.
      this.gone++;
      this.send(res, 'ERROR', status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`));
      return void res.end();
    }
    if (from === 0) for (const o of c.objects.values()) this.send(res, 'ADDED', o);
    else for (const e of this.history) if (e.path === url.pathname && e.rv > from) this.send(res, e.type, e.object);
    const w: Watcher = { path: url.pathname, res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true' };
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }
}
