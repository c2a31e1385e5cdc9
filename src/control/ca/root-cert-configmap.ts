// The mesh root certificate in every namespace, as istiod's namespace controller publishes it: a
// ConfigMap `istio-ca-root-cert` whose `root-cert.pem` is the root workloads and the node agents
// (their DaemonSet mounts it) trust, labelled `istio.io/config: "true"`.
//
// Two informers feed a queue of namespaces: Namespaces, and ConfigMaps of that one name (a field
// selector, so RBAC can grant list/watch on that name only). Once both are listed every namespace
// is reconciled against the caches, and again when it or its ConfigMap changes, and at each
// resync: created if missing (also after a delete), corrected if edited (other keys and labels are
// kept), left alone in a namespace being deleted. A write conflict (409) re-reads the object and
// tries again; other API errors back off and retry a bounded number of times, then wait for the
// next event or resync. Lists and watches are retried without limit, with back-off.
import { setMaxListeners } from 'node:events';
import { ListWatch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { getJson, ManagedWatch, requestJson, type HttpError } from '../config/kube-api.ts';

/** Istio's name for the ConfigMap, its key, and its label. */
export const ROOT_CERT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CERT_KEY = 'root-cert.pem';
export const ROOT_CERT_LABELS: Readonly<Record<string, string>> = { 'istio.io/config': 'true' };

export interface RootCertPublisherOptions {
  /** Back-off after a failed write, doubling from min to max. */
  retryMs?: { min: number; max: number };
  /** Retries of a failing namespace before it waits for its next event or the next resync (Istio: 5). */
  maxRetries?: number;
  /** Back-off after a failed list or watch (retried without limit), doubling from min to max. */
  watchRetryMs?: { min: number; max: number };
  /** How often every namespace is checked again (cheap: against the caches). */
  resyncMs?: number;
  /** Namespaces reconciled at the same time. */
  concurrency?: number;
  /** Time limit of one API request. */
  requestTimeoutMs?: number;
}

export interface RootCertPublisherCounters {
  created: number;
  updated: number;
  /** 409s answered by re-reading. */
  conflicts: number;
  /** Failed writes (each retried, up to maxRetries). */
  errors: number;
  /** Namespaces given up on until their next event or the next resync. */
  givenUp: number;
  /** Failed lists and watches. */
  watchErrors: number;
}

export interface RootCertPublisher {
  /** Publishes another root (a rotated or replugged CA) to every namespace. */
  update(rootPem: string): void;
  /** True once Namespaces and ConfigMaps are listed and publishing has begun. */
  readonly synced: boolean;
  readonly counters: Readonly<RootCertPublisherCounters>;
  /** Stops the informers, pending retries and requests in flight. */
  close(): void;
}

interface ConfigMap extends KubernetesObject {
  data?: Record<string, string>;
}

interface Namespace extends KubernetesObject {
  status?: { phase?: string };
}

interface Informer {
  what: string;
  path: string;
  /** The list's query (the watch gets the same selector from ListWatch). */
  query: string;
  informer: ListWatch<KubernetesObject>;
  watch: ManagedWatch;
  listed: boolean;
  failures: number;
  retry?: NodeJS.Timeout;
}

const FIELD_SELECTOR = `metadata.name=${ROOT_CERT_CONFIGMAP}`;
/** Conflicts answered by re-reading within one attempt; more means a fight with another writer. */
const MAX_CONFLICTS = 5;

const request = requestJson;

const statusOf = (err: unknown) => (err as HttpError).statusCode;
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));
const configMapPath = (ns: string, name?: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/configmaps${name ? `/${encodeURIComponent(name)}` : ''}`;

/** Starts publishing `rootPem` as the istio-ca-root-cert ConfigMap in every namespace. */
export function startRootCertPublisher(kc: KubeConfig, rootPem: string, log: Logger, opts: RootCertPublisherOptions = {}): RootCertPublisher {
  return new Publisher(kc, rootPem, log.child({ configMap: ROOT_CERT_CONFIGMAP }), opts);
}

class Publisher implements RootCertPublisher {
  readonly counters: RootCertPublisherCounters = { created: 0, updated: 0, conflicts: 0, errors: 0, givenUp: 0, watchErrors: 0 };
  synced = false;
  private readonly namespaces: Informer;
  private readonly configMaps: Informer;
  private readonly abort = new AbortController();
  private readonly waiting = new Set<string>(); // queued, in order
  private readonly active = new Set<string>(); // being reconciled
  private readonly dirty = new Set<string>(); // changed while being reconciled
  private readonly retries = new Map<string, { failures: number; timer?: NodeJS.Timeout }>();
  private readonly resync: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly kc: KubeConfig,
    private rootPem: string,
    private readonly log: Logger,
    private readonly opts: RootCertPublisherOptions,
  ) {
    setMaxListeners(0, this.abort.signal); // one listener per request in flight
    this.namespaces = this.informer('namespaces', '/api/v1/namespaces');
    this.configMaps = this.informer('configmaps', '/api/v1/configmaps', FIELD_SELECTOR);
    const namespaceChanged = (o: KubernetesObject) => this.enqueue(o.metadata?.name);
    this.namespaces.informer.on('add', namespaceChanged);
    this.namespaces.informer.on('update', namespaceChanged);
    this.namespaces.informer.on('delete', (o: KubernetesObject) => this.forget(o.metadata?.name));
    const configMapChanged = (o: KubernetesObject) => this.enqueue(o.metadata?.namespace);
    this.configMaps.informer.on('add', configMapChanged);
    this.configMaps.informer.on('update', configMapChanged);
    this.configMaps.informer.on('delete', configMapChanged);
    this.resync = setInterval(() => this.enqueueAll(), opts.resyncMs ?? 5 * 60_000);
    this.run(this.namespaces);
    this.run(this.configMaps);
  }

  update(rootPem: string): void {
    if (rootPem === this.rootPem) return;
    this.rootPem = rootPem;
    this.log.info('mesh root certificate changed; publishing it to every namespace');
    this.enqueueAll();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    clearInterval(this.resync);
    for (const r of this.retries.values()) clearTimeout(r.timer);
    this.retries.clear();
    this.waiting.clear();
    this.dirty.clear();
    for (const i of [this.namespaces, this.configMaps]) {
      clearTimeout(i.retry);
      void i.informer.stop();
      i.watch.close();
    }
  }

  // ---- informers ------------------------------------------------------------------------------

  private informer(what: string, path: string, fieldSelector?: string): Informer {
    const watch = new ManagedWatch(this.kc, () => (i.failures = 0));
    const query = fieldSelector ? `?fieldSelector=${encodeURIComponent(fieldSelector)}` : '';
    const i: Informer = { what, path, query, watch, listed: false, failures: 0, informer: new ListWatch(path, watch, () => this.list(i), false, undefined, fieldSelector) };
    i.informer.on('error', (err: unknown) => this.watchFailed(i, err));
    return i;
  }

  private run(i: Informer): void {
    i.retry = undefined;
    if (!this.closed) void i.informer.start();
  }

  private async list(i: Informer): Promise<KubernetesListObject<KubernetesObject>> {
    if (this.closed) throw new Error('closed');
    const body = (await getJson(this.kc, i.path + i.query, this.abort.signal, this.opts.requestTimeoutMs)) as KubernetesListObject<KubernetesObject>;
    if (!Array.isArray(body?.items)) throw new Error(`GET ${i.path}: not a list`);
    i.listed = true;
    i.failures = 0;
    // ListWatch stores the items after this promise resolves, in the same run of microtasks.
    setImmediate(() => this.checkSynced());
    return body;
  }

  private watchFailed(i: Informer, err: unknown): void {
    if (this.closed) return; // aborted by close()
    this.counters.watchErrors++;
    const { min, max } = this.opts.watchRetryMs ?? { min: 1000, max: 30_000 };
    const delay = Math.min(max, min * 2 ** i.failures++);
    this.log.warn({ resource: i.what, err: messageOf(err), retryMs: delay }, 'kubernetes list/watch failed');
    i.retry = setTimeout(() => this.run(i), delay);
  }

  private checkSynced(): void {
    if (this.synced || this.closed || !this.namespaces.listed || !this.configMaps.listed) return;
    this.synced = true;
    this.log.info({ namespaces: this.namespaces.informer.list().length }, 'publishing the mesh root certificate to every namespace');
    this.enqueueAll();
  }

  // ---- queue ----------------------------------------------------------------------------------

  private enqueueAll(): void {
    for (const ns of this.namespaces.informer.list()) this.enqueue(ns.metadata?.name);
  }

  private enqueue(ns: string | undefined): void {
    if (!ns || this.closed || !this.synced) return;
    const r = this.retries.get(ns);
    if (r?.timer) {
      clearTimeout(r.timer); // a change is worth trying now; the failure count stays
      r.timer = undefined;
    }
    if (this.active.has(ns)) this.dirty.add(ns);
    else this.waiting.add(ns);
    this.pump();
  }

  /** A deleted namespace: nothing more to do there. */
  private forget(ns: string | undefined): void {
    if (!ns) return;
    clearTimeout(this.retries.get(ns)?.timer);
    this.retries.delete(ns);
    this.waiting.delete(ns);
  }

  private pump(): void {
    const limit = this.opts.concurrency ?? 4;
    for (const ns of this.waiting) {
      if (this.active.size >= limit) return;
      this.waiting.delete(ns);
      this.active.add(ns);
      void this.process(ns);
    }
  }

  private async process(ns: string): Promise<void> {
    try {
      await this.reconcile(ns);
      this.retries.delete(ns);
    } catch (err) {
      if (!this.closed) this.failed(ns, err);
    } finally {
      this.active.delete(ns);
      if (this.dirty.delete(ns) && !this.closed) this.enqueue(ns);
      this.pump();
    }
  }

  private failed(ns: string, err: unknown): void {
    this.counters.errors++;
    const r = this.retries.get(ns) ?? { failures: 0 };
    const maxRetries = this.opts.maxRetries ?? 5;
    if (r.failures >= maxRetries) {
      this.retries.delete(ns);
      this.counters.givenUp++;
      this.log.error({ namespace: ns, err: messageOf(err), attempts: r.failures + 1 }, 'cannot publish the mesh root certificate; trying again on the next change or resync');
      return;
    }
    const { min, max } = this.opts.retryMs ?? { min: 500, max: 30_000 };
    const delay = Math.min(max, min * 2 ** r.failures++);
    this.log.warn({ namespace: ns, err: messageOf(err), retryMs: delay }, 'publishing the mesh root certificate failed; retrying');
    r.timer = setTimeout(() => {
      r.timer = undefined;
      this.enqueue(ns);
    }, delay);
    this.retries.set(ns, r);
  }

  // ---- one namespace --------------------------------------------------------------------------

  private async reconcile(ns: string): Promise<void> {
    const namespace = this.namespaces.informer.get(ns) as Namespace | undefined;
    if (!namespace) return; // deleted since
    if (namespace.status?.phase === 'Terminating') return; // its content is being removed: do not add back
    let current = this.configMaps.informer.get(ROOT_CERT_CONFIGMAP, ns) as ConfigMap | undefined;
    for (let conflicts = 0; ; ) {
      if (this.closed) return;
      const pem = this.rootPem;
      try {
        if (!current) {
          await this.send('POST', configMapPath(ns), {
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: ROOT_CERT_CONFIGMAP, namespace: ns, labels: { ...ROOT_CERT_LABELS } },
            data: { [ROOT_CERT_KEY]: pem },
          });
          this.counters.created++;
          this.log.info({ namespace: ns }, 'mesh root certificate published');
          return;
        }
        const fixed = corrected(current, pem);
        if (!fixed) return;
        await this.send('PUT', configMapPath(ns, ROOT_CERT_CONFIGMAP), fixed);
        this.counters.updated++;
        this.log.info({ namespace: ns }, 'mesh root certificate ConfigMap corrected');
        return;
      } catch (err) {
        const code = statusOf(err);
        if (!current && code === 404) return; // the namespace is gone
        if (!current && code === 403 && /being terminated/.test(messageOf(err))) return; // NamespaceTerminating
        if (current && code === 404) {
          current = undefined; // deleted meanwhile: create it again
          continue;
        }
        if (code !== 409 || ++conflicts > MAX_CONFLICTS) throw err;
        // AlreadyExists (our cache had not seen it yet) or Conflict (changed since we read it).
        this.counters.conflicts++;
        current = await this.read(ns);
      }
    }
  }

  private async read(ns: string): Promise<ConfigMap | undefined> {
    try {
      return (await this.send('GET', configMapPath(ns, ROOT_CERT_CONFIGMAP))) as ConfigMap;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  private send(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<unknown> {
    return request(this.kc, method, path, body, this.abort.signal, this.opts.requestTimeoutMs);
  }
}

/** The ConfigMap as it should be (other keys and labels kept), or undefined if it already is. */
function corrected(cm: ConfigMap, pem: string): ConfigMap | undefined {
  const labels = cm.metadata?.labels ?? {};
  const labelled = Object.entries(ROOT_CERT_LABELS).every(([k, v]) => labels[k] === v);
  if (cm.data?.[ROOT_CERT_KEY] === pem && labelled) return undefined;
  return {
    ...cm,
    apiVersion: 'v1', // list items carry neither
    kind: 'ConfigMap',
    metadata: { ...cm.metadata, labels: { ...labels, ...ROOT_CERT_LABELS } }, // resourceVersion kept: a stale one answers 409
    data: { ...cm.data, [ROOT_CERT_KEY]: pem },
  };
}
