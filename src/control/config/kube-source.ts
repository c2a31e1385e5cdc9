// Configuration from the Kubernetes API: one informer (list, then watch) per resource, the caches
// merged into the same snapshot DirSource emits. Watch events are applied one object at a time;
// a list (the first, a relist after 410 Gone, a resource appearing or vanishing) compares
// everything. An object whose new version is invalid keeps its last good version in force. A resource the server does not serve (a CRD not installed) is
// skipped and retried; any other failure blocks the first snapshot, since a partial one could
// lack AuthorizationPolicies and open traffic that should be denied.
import { EventEmitter, setMaxListeners } from 'node:events';
import { ListWatch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { ManifestProblem } from '../../kube/manifest.ts';
import { isNamespaced, keyOf } from '../../kube/objects.ts';
import { checkObject, DEFAULT_DEBOUNCE, Debouncer, EMPTY_SNAPSHOT, LastGoodStore, validateForControl, type Checked, type ConfigSnapshot, type DebounceOptions, type Validate } from './config-store.ts';
import { collectionPath, getJson, KUBE_RESOURCES, listPath, ManagedWatch, objectPath, type HttpError, type KubeResource } from './kube-api.ts';

export interface KubeSourceOptions {
  debounce?: DebounceOptions;
  /** How often to look again for a resource that is not served (Istio rechecks CRDs too). */
  missingRetryMs?: number;
  /** Back-off after other failures, doubling from min to max. */
  errorRetryMs?: { min: number; max: number };
  resources?: readonly KubeResource[];
  validate?: Validate;
}

interface Watched {
  res: KubeResource;
  informer: ListWatch<KubernetesObject>;
  watch: ManagedWatch;
  synced: boolean; // listed successfully at least once
  missing: boolean; // the last attempt answered 404
  failures: number;
  retry?: NodeJS.Timeout;
}

export class KubeSource extends EventEmitter {
  snapshot: ConfigSnapshot = EMPTY_SNAPSHOT;
  /** For metrics: watch events applied, lists after the first (a 410 or a reconnect), failures. */
  readonly counters = { events: 0, relists: 0, errors: 0 };
  private readonly watched: Watched[];
  private readonly store = new LastGoodStore();
  private readonly debouncer: Debouncer;
  private readonly abort = new AbortController();
  private readonly validate: Validate;
  /** Validation per informer object: an object the informer did not replace is not checked again. */
  private readonly validated = new WeakMap<KubernetesObject, Checked>();
  /** Objects changed by watch events since the last snapshot, by key (none: deleted). */
  private readonly pending = new Map<string, { w: Watched; obj?: KubernetesObject }>();
  /** The next snapshot compares every object (a list replaced a cache, or a resource came or went). */
  private resync = true;
  /** Invalid objects by key (their last good version, if any, stays in force). */
  private readonly problems = new Map<string, ManifestProblem>();
  private started = false;
  private closed = false;
  private settle?: () => void;

  constructor(
    private readonly kc: KubeConfig,
    private readonly log: Logger,
    private readonly opts: KubeSourceOptions = {},
  ) {
    super();
    setMaxListeners(0, this.abort.signal); // one listener per list in flight, one list per resource
    this.debouncer = new Debouncer(() => this.flush(), opts.debounce ?? DEFAULT_DEBOUNCE);
    this.validate = opts.validate ?? validateForControl;
    this.watched = (opts.resources ?? KUBE_RESOURCES).map((res) => {
      const watch = new ManagedWatch(kc, () => this.served(w));
      const w: Watched = { res, watch, informer: new ListWatch(collectionPath(res), watch, () => this.list(w), false, undefined, res.fieldSelector), synced: false, missing: false, failures: 0 };
      const changed = (obj: KubernetesObject, deleted: boolean) => {
        this.counters.events++;
        if (!this.started) return; // the first snapshot reads the caches whole
        this.pending.set(keyOfItem(w.res, obj), { w, obj: deleted ? undefined : obj });
        this.changed();
      };
      w.informer.on('add', (o) => changed(o, false));
      w.informer.on('update', (o) => changed(o, false));
      w.informer.on('delete', (o) => changed(o, true));
      w.informer.on('error', (err: unknown) => this.failed(w, err as HttpError));
      return w;
    });
  }

  /** Resolves once every resource is listed or known not to be served, with the first snapshot. */
  async start(): Promise<ConfigSnapshot> {
    await new Promise<void>((resolve) => {
      this.settle = resolve;
      for (const w of this.watched) this.run(w);
    });
    if (this.closed) return this.snapshot;
    this.started = true;
    this.flush();
    return this.snapshot;
  }

  /** Per resource: whether it is listed or missing, and the resourceVersion its watch resumes from. */
  status() {
    return this.watched.map((w) => ({ kind: w.res.kind, synced: w.synced, missing: w.missing, resourceVersion: w.informer.latestResourceVersion(), objects: w.informer.list().length }));
  }

  close(): void {
    this.closed = true;
    this.debouncer.cancel();
    this.abort.abort();
    for (const w of this.watched) {
      clearTimeout(w.retry);
      void w.informer.stop();
      w.watch.close();
    }
    this.settle?.();
  }

  /** (Re)starts an informer: it lists if it has no resourceVersion to resume from, then watches. */
  private run(w: Watched): void {
    w.retry = undefined;
    if (!this.closed) void w.informer.start();
  }

  private async list(w: Watched): Promise<KubernetesListObject<KubernetesObject>> {
    if (this.closed) throw new Error('closed');
    if (w.synced) {
      this.counters.relists++;
      this.resync = true;
    }
    const body = (await getJson(this.kc, listPath(w.res), this.abort.signal)) as KubernetesListObject<KubernetesObject>;
    if (!Array.isArray(body?.items)) throw new Error(`GET ${listPath(w.res)}: not a list`);
    w.synced = true;
    this.served(w);
    // ListWatch stores the items after this promise resolves, in the same run of microtasks.
    setImmediate(() => this.checkSettled());
    return body;
  }

  /** A list or watch succeeded. */
  private served(w: Watched): void {
    w.failures = 0;
    if (!w.missing) return;
    this.log.info({ kind: w.res.kind }, 'kubernetes resource now served');
    w.missing = false;
    this.resync = true;
    this.changed();
  }

  private failed(w: Watched, err: HttpError): void {
    if (this.closed) return; // aborted by close()
    this.counters.errors++;
    if (err.statusCode === 404) {
      if (!w.missing) {
        this.log.warn({ kind: w.res.kind, path: collectionPath(w.res) }, 'kubernetes resource not served (CRD not installed?); skipped, will retry');
        w.missing = true;
        this.resync = true; // its objects leave the snapshot
        this.changed();
      }
      w.retry = setTimeout(() => this.run(w), this.opts.missingRetryMs ?? 30_000);
    } else {
      const { min, max } = this.opts.errorRetryMs ?? { min: 1000, max: 30_000 };
      const delay = Math.min(max, min * 2 ** w.failures++);
      this.log.warn({ kind: w.res.kind, err: err.message, retryMs: delay }, 'kubernetes list/watch failed');
      w.retry = setTimeout(() => this.run(w), delay);
    }
    this.checkSettled();
  }

  private checkSettled(): void {
    if (this.settle && this.watched.every((w) => w.synced || w.missing)) {
      this.settle();
      this.settle = undefined;
    }
  }

  private changed(): void {
    if (this.started && !this.closed) this.debouncer.trigger();
  }

  private flush(): void {
    if (this.resync) {
      this.resync = false;
      this.pending.clear();
      const seen = new Set<string>();
      for (const w of this.watched) {
        if (w.missing) continue;
        for (const o of w.informer.list()) {
          const key = keyOfItem(w.res, o);
          seen.add(key);
          this.apply(key, w, o);
        }
      }
      for (const key of [...this.store.keys()]) if (!seen.has(key)) this.remove(key);
      for (const key of [...this.problems.keys()]) if (!seen.has(key)) this.problems.delete(key);
    } else {
      for (const [key, { w, obj }] of this.pending) {
        if (obj) this.apply(key, w, obj);
        else this.remove(key);
      }
      this.pending.clear();
    }
    // Problems travel in the snapshot; the control plane logs them once, with the semantic ones.
    this.snapshot = this.store.snapshot([...this.problems.values()]);
    this.emit('update', this.snapshot);
  }

  private apply(key: string, w: Watched, o: KubernetesObject): void {
    let r = this.validated.get(o);
    if (!r) {
      // List items carry no apiVersion/kind; the model needs them.
      r = checkObject({ ...o, apiVersion: w.res.apiVersion, kind: w.res.kind }, () => objectPath(w.res, o), this.validate);
      this.validated.set(o, r);
    }
    if ('object' in r) {
      this.store.put(r.object);
      this.problems.delete(key);
    } else this.problems.set(key, r.problem); // the last good version, if any, stays
  }

  private remove(key: string): void {
    this.store.remove(key);
    this.problems.delete(key);
  }
}

/** The store key of an informer object (informer items lack kind), as validation would name it. */
const keyOfItem = (res: KubeResource, o: KubernetesObject) =>
  keyOf({ kind: res.kind, metadata: { name: o.metadata?.name ?? '', namespace: isNamespaced(res.kind) ? o.metadata?.namespace || 'default' : undefined } });
