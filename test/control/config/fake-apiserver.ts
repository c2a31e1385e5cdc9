// A Kubernetes API server double, enough for informers and simple controllers: list and watch of
// collections (cluster-wide or in one namespace, with metadata.name/metadata.namespace field
// selectors), one resourceVersion counter across all of them (as etcd), bookmarks, a compacted
// history answering too-old watches with a 410 ERROR event, and 404 for resources not installed.
// Writes as the real server answers them: GET of one object, POST (201; 409 AlreadyExists; 404 or
// 403 NamespaceTerminating for a missing or terminating namespace) and PUT (409 Conflict on a stale
// resourceVersion, 404 for a missing object), PATCH with a JSON merge patch (also on /status; a uid
// in it is a precondition, 409 on mismatch), DELETE (a uid precondition in DeleteOptions, 409 on
// mismatch; dependents are not collected: there is no garbage collector). A Service created
// without a clusterIP gets one, as the API server allocates it. Label selectors `key` and
// `key=value` on lists and watches. TokenReview (POST, 201) when a test sets tokenReview;
// serviceAccountTokens() answers it for ServiceAccount tokens as the real server does.
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
  matches: (o: FakeObject) => boolean;
}

/** A request as the fault hook sees it. */
export interface FakeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
}

/** The spec of a TokenReview, as the client sent it. */
export interface FakeTokenReviewSpec {
  token?: string;
  audiences?: string[];
}

/** A ServiceAccount token as the fake API server knows it (what a TokenRequest would have minted). */
export interface FakeServiceAccountToken {
  namespace: string;
  serviceAccount: string;
  /** The token's audiences; default the API server's own. */
  audiences?: string[];
  /** Seconds since the epoch; past it the token is refused. */
  exp?: number;
  /** Bound to a pod on this node (authentication.kubernetes.io/node-name in the review's extra). */
  node?: string;
}

export const API_SERVER_AUDIENCE = 'https://kubernetes.default.svc.cluster.local';

/**
 * A tokenReview answer for these tokens as kube-apiserver gives it: an unknown token, an expired
 * one (unless `ignoreExpiry`: a server whose clock is behind), or one whose audiences miss every
 * audience the review asks for (default: the server's own) is not authenticated; otherwise the
 * user is system:serviceaccount:<ns>:<sa> and status.audiences the intersection.
 */
export function serviceAccountTokens(tokens: Record<string, FakeServiceAccountToken>, o: { ignoreExpiry?: boolean } = {}): NonNullable<FakeApiServer['tokenReview']> {
  return (spec) => {
    const t = spec.token !== undefined ? (Object.hasOwn(tokens, spec.token) ? tokens[spec.token] : undefined) : undefined;
    if (!t) return { authenticated: false, error: 'invalid bearer token' };
    if (!o.ignoreExpiry && t.exp !== undefined && t.exp * 1000 <= Date.now()) return { authenticated: false, error: 'invalid bearer token, service account token has expired' };
    const has = t.audiences ?? [API_SERVER_AUDIENCE];
    const want = spec.audiences?.length ? spec.audiences : [API_SERVER_AUDIENCE];
    const audiences = want.filter((a) => has.includes(a));
    if (!audiences.length) return { authenticated: false, error: `token audiences ${JSON.stringify(has)} is invalid for the target audiences ${JSON.stringify(want)}` };
    return {
      authenticated: true,
      audiences,
      user: {
        username: `system:serviceaccount:${t.namespace}:${t.serviceAccount}`,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${t.namespace}`, 'system:authenticated'],
        extra: t.node ? { 'authentication.kubernetes.io/node-name': [t.node] } : {},
      },
    };
  };
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const TOKEN_REVIEWS = '/apis/authentication.k8s.io/v1/tokenreviews';

const status = (code: number, reason: string, message: string, details?: unknown) => ({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code });

/** `metadata.name=x,metadata.namespace=y,spec.nodeName=z` (= or ==, !=) as a predicate; anything else is unsupported. */
function fieldFilter(selector: string | null): ((o: FakeObject) => boolean) | string {
  const tests: ((o: FakeObject) => boolean)[] = [];
  for (const term of (selector ?? '').split(',').filter(Boolean)) {
    const m = /^(metadata\.name|metadata\.namespace|spec\.nodeName)(==?|!=)(.*)$/.exec(term);
    if (!m) return `field selector not supported by the fake: ${term}`;
    const [, field, op, value] = m as unknown as [string, string, string, string];
    const [outer, inner] = field.split('.') as [string, string];
    tests.push((o) => (((o[outer] as Record<string, unknown> | undefined)?.[inner] ?? '') === value) === (op !== '!='));
  }
  return (o) => tests.every((t) => t(o));
}

/** `key`, `key=value`, `key!=value` terms (comma-separated, all must hold) as a predicate; anything else is unsupported. */
function labelFilter(selector: string | null): ((o: FakeObject) => boolean) | string {
  const tests: ((o: FakeObject) => boolean)[] = [];
  for (const term of (selector ?? '').split(',').filter(Boolean)) {
    const m = /^([A-Za-z0-9./_-]+)(?:(==?|!=)([A-Za-z0-9._-]*))?$/.exec(term);
    if (!m) return `label selector not supported by the fake: ${term}`;
    const [, key, op, value] = m as unknown as [string, string, string | undefined, string | undefined];
    const labelOf = (o: FakeObject) => (o.metadata.labels as Record<string, string> | undefined)?.[key];
    tests.push(op === undefined ? (o) => labelOf(o) !== undefined : (o) => (labelOf(o) === value) === (op !== '!='));
  }
  return (o) => tests.every((t) => t(o));
}

/** RFC 7386: objects merge key by key, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(patch)) return patch;
  const out: Record<string, unknown> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export class FakeApiServer {
  /** Every request, to check what the client asked for. */
  readonly requests: { method: string; path: string; query: URLSearchParams; authorization?: string }[] = [];
  /** Called for every request before it is served; a status code returned is answered instead. */
  fault?: (r: FakeRequest) => number | undefined;
  /** Watches answered with 410 Gone. */
  gone = 0;
  /** While set, new watches fail with 503 (a broken connection the client must retry). */
  refuseWatches = false;
  /** While set, POST tokenreviews is answered with the status it returns; unset, 404 (not served). */
  tokenReview?: (spec: FakeTokenReviewSpec) => { authenticated: boolean; [k: string]: unknown };
  private rv = 1000;
  private nextClusterIp = 1;
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
    return this.store(path, c, obj);
  }

  /** The stored object, or undefined. */
  get(kind: string, namespace: string | undefined, name: string): FakeObject | undefined {
    const o = this.collectionOf(kind)[1].objects.get(`${namespace ?? ''}/${name}`);
    return o && structuredClone(o);
  }

  /** Every stored object of a kind. */
  list(kind: string): FakeObject[] {
    return [...this.collectionOf(kind)[1].objects.values()].map((o) => structuredClone(o));
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

  private store(path: string, c: Collection, obj: FakeObject): FakeObject {
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const prev = c.objects.get(key);
    const stored: FakeObject = structuredClone(obj);
    stored.apiVersion = c.apiVersion;
    stored.kind = c.kind;
    stored.metadata = {
      ...stored.metadata,
      uid: prev?.metadata.uid ?? randomUUID(),
      creationTimestamp: prev?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      resourceVersion: String(++this.rv),
    };
    c.objects.set(key, stored);
    this.record(path, prev ? 'MODIFIED' : 'ADDED', stored);
    return stored;
  }

  private record(path: string, type: EventType, object: FakeObject): void {
    this.history.push({ rv: this.rv, path, type, object });
    for (const w of this.watchers) if (w.path === path && w.matches(object)) this.send(w.res, type, object);
  }

  private send(res: ServerResponse, type: string, object: unknown): void {
    res.write(JSON.stringify({ type, object }) + '\n');
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: url.pathname, query: url.searchParams, authorization: req.headers.authorization });
    const json = (code: number, body: unknown) => void res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const injected = this.fault?.({ method, path: url.pathname, query: url.searchParams });
    if (injected !== undefined) return json(injected, status(injected, 'InternalError', `fault injected by the test: ${injected}`));
    const review = this.tokenReview;
    if (review && method === 'POST' && url.pathname === TOKEN_REVIEWS)
      // A create that is never stored (no metadata needed): the spec comes back with the status.
      return this.readBody(req, json, (body) => json(201, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', metadata: {}, spec: body?.spec, status: review((body?.spec ?? {}) as FakeTokenReviewSpec) }), false);

    // /api/v1/namespaces/NS/PLURAL[/NAME], /apis/G/V/namespaces/NS/PLURAL[/NAME], or PREFIX/PLURAL[/NAME].
    const m =
      /^(\/api\/v1|\/apis\/[^/]+\/[^/]+)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+))?(?:\/status)?$/.exec(url.pathname) ??
      /^(\/api\/v1|\/apis\/[^/]+\/[^/]+)()\/([^/]+)(?:\/([^/]+))?$/.exec(url.pathname);
    const path = m ? `${m[1]}/${m[3]}` : url.pathname;
    const namespace = m?.[2] ? decodeURIComponent(m[2]) : undefined;
    const name = m?.[4] ? decodeURIComponent(m[4]) : undefined;
    const c = this.collections.get(path);
    if (!c || !c.installed) return json(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const plural = path.slice(path.lastIndexOf('/') + 1);
    const key = `${namespace ?? ''}/${name}`;

    if (method === 'GET' && name !== undefined) {
      const o = c.objects.get(key);
      return o ? json(200, o) : json(404, status(404, 'NotFound', `${plural} "${name}" not found`));
    }
    if (method === 'POST' && name === undefined && namespace !== undefined) return this.readBody(req, json, (body) => this.create(c, path, namespace, body, json));
    if (method === 'PUT' && name !== undefined) return this.readBody(req, json, (body) => this.update(c, path, namespace, name, body, json));
    if (method === 'PATCH' && name !== undefined) {
      // JSON merge patch (RFC 7386) only; on the object or its status subresource (both may change metadata).
      if (req.headers['content-type'] !== 'application/merge-patch+json') return json(415, status(415, 'UnsupportedMediaType', `the fake takes merge patches only, not ${req.headers['content-type']}`));
      return this.readBody(req, json, (patch) => {
        const prev = c.objects.get(key);
        if (!prev) return json(404, status(404, 'NotFound', `${plural} "${name}" not found`));
        // A uid in the patch is a precondition (the field is immutable): a replaced object is not patched.
        if (patch.metadata?.uid !== undefined && patch.metadata.uid !== prev.metadata.uid)
          return json(409, status(409, 'Conflict', `Operation cannot be fulfilled on ${plural} "${name}": Precondition failed: UID in precondition: ${String(patch.metadata.uid)}, UID in object meta: ${String(prev.metadata.uid)}`));
        json(200, this.store(path, c, mergePatch(prev, patch) as FakeObject));
      }, false);
    }
    if (method === 'DELETE' && name !== undefined)
      return this.readBody(req, json, (options) => {
        const prev = c.objects.get(key);
        if (!prev) return json(404, status(404, 'NotFound', `${plural} "${name}" not found`));
        const uid = (options?.preconditions as { uid?: string } | undefined)?.uid;
        if (uid !== undefined && uid !== prev.metadata.uid)
          return json(409, status(409, 'Conflict', `Operation cannot be fulfilled on ${plural} "${name}": Precondition failed: UID in precondition: ${uid}, UID in object meta: ${String(prev.metadata.uid)}`));
        this.remove(c.kind, namespace, name);
        json(200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind: plural, uid: prev.metadata.uid } });
      }, false, true);
    if (method !== 'GET') return json(405, status(405, 'MethodNotAllowed', `${method} ${url.pathname} is not supported by the fake`));

    const filter = fieldFilter(url.searchParams.get('fieldSelector'));
    if (typeof filter === 'string') return json(400, status(400, 'BadRequest', filter));
    const labels = labelFilter(url.searchParams.get('labelSelector'));
    if (typeof labels === 'string') return json(400, status(400, 'BadRequest', labels));
    const matches = (o: FakeObject) => (namespace === undefined || o.metadata.namespace === namespace) && filter(o) && labels(o);
    if (url.searchParams.get('watch') !== 'true') {
      // List items carry no apiVersion/kind, as from the real server.
      const items = [...c.objects.values()].filter(matches).map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
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
    if (from === 0) {
      for (const o of c.objects.values()) if (matches(o)) this.send(res, 'ADDED', o);
    } else {
      for (const e of this.history) if (e.path === path && e.rv > from && matches(e.object)) this.send(res, e.type, e.object);
    }
    const w: Watcher = { path, res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', matches };
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }

  private readBody(req: IncomingMessage, json: (code: number, body: unknown) => void, then: (body: FakeObject) => void, needsMetadata = true, mayBeEmpty = false): void {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      let body: FakeObject;
      if (mayBeEmpty && chunks.length === 0) return then({} as FakeObject);
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as FakeObject;
      } catch {
        return json(400, status(400, 'BadRequest', 'the body is not JSON'));
      }
      if (needsMetadata && (typeof body?.metadata !== 'object' || body.metadata === null)) return json(400, status(400, 'BadRequest', 'metadata is required'));
      then(body);
    });
  }

  private create(c: Collection, path: string, namespace: string, body: FakeObject, json: (code: number, body: unknown) => void): void {
    const plural = path.slice(path.lastIndexOf('/') + 1);
    const { name } = body.metadata;
    if (!name) return json(422, status(422, 'Invalid', `${c.kind} is invalid: metadata.name: Required value`));
    if (body.metadata.namespace !== undefined && body.metadata.namespace !== namespace)
      return json(400, status(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request'));
    const namespaces = [...this.collections.values()].find((n) => n.kind === 'Namespace');
    if (namespaces) {
      const ns = namespaces.objects.get(`/${namespace}`);
      if (!ns) return json(404, status(404, 'NotFound', `namespaces "${namespace}" not found`));
      if ((ns.status as { phase?: string } | undefined)?.phase === 'Terminating')
        return json(
          403,
          status(403, 'Forbidden', `${plural} "${name}" is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`, {
            name,
            kind: plural,
            causes: [{ reason: 'NamespaceTerminating', message: `namespace ${namespace} is being terminated`, field: 'metadata.namespace' }],
          }),
        );
    }
    if (c.objects.has(`${namespace}/${name}`)) return json(409, status(409, 'AlreadyExists', `${plural} "${name}" already exists`));
    const { resourceVersion: _rv, uid: _uid, ...metadata } = body.metadata;
    if (c.kind === 'Service') {
      // The API server allocates a cluster IP unless one is given (or None: headless).
      const spec = (body.spec ?? {}) as { clusterIP?: string; clusterIPs?: string[]; type?: string };
      if (!spec.clusterIP && spec.type !== 'ExternalName') {
        const n = this.nextClusterIp++;
        spec.clusterIP = `10.96.${n >> 8}.${n & 255}`;
        spec.clusterIPs = [spec.clusterIP];
      }
      body = { ...body, spec };
    }
    json(201, this.store(path, c, { ...body, metadata: { ...metadata, name, namespace } }));
  }

  private update(c: Collection, path: string, namespace: string | undefined, name: string, body: FakeObject, json: (code: number, body: unknown) => void): void {
    const plural = path.slice(path.lastIndexOf('/') + 1);
    if (body.metadata.name !== name) return json(400, status(400, 'BadRequest', 'the name of the object does not match the name on the URL'));
    if (body.metadata.namespace !== undefined && body.metadata.namespace !== namespace)
      return json(400, status(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request'));
    const prev = c.objects.get(`${namespace ?? ''}/${name}`);
    if (!prev) return json(404, status(404, 'NotFound', `${plural} "${name}" not found`));
    // Without a resourceVersion the update is unconditional (as for ConfigMaps); with one it must be current.
    if (body.metadata.resourceVersion && body.metadata.resourceVersion !== prev.metadata.resourceVersion)
      return json(409, status(409, 'Conflict', `Operation cannot be fulfilled on ${plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`));
    json(200, this.store(path, c, { ...body, metadata: { ...body.metadata, namespace } }));
  }
}
