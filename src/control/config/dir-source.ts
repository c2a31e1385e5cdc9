// Configuration from a directory of Kubernetes YAML, watched for changes. Each reload re-reads
// every file; an object whose new version is invalid (or whose file no longer parses) keeps its
// last good version in force, so a bad edit never takes anything away.
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { formatProblem, loadManifests, type ManifestProblem } from '../../lab/manifest.ts';
import { isNamespaced, keyOf, type KObject } from '../../lab/objects.ts';

export interface ConfigSnapshot {
  objects: KObject[];
  problems: ManifestProblem[];
}

/** "Kind ns/name" as problems name objects, to match a problem to the last good version. */
const labelOf = (o: KObject) => (isNamespaced(o.kind) ? `${o.kind} ${o.metadata.namespace}/${o.metadata.name}` : `${o.kind} ${o.metadata.name}`);

export class DirSource extends EventEmitter {
  private watchers = new Map<string, FSWatcher>();
  private timer?: NodeJS.Timeout;
  private firstChangeAt = 0;
  private lastGood = new Map<string, { object: KObject; file: string }>();
  snapshot: ConfigSnapshot = { objects: [], problems: [] };

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    /** Push after this much quiet, and at most this late under constant churn (Istio: 100 ms, 10 s). */
    private readonly debounce = { quietMs: 100, maxDelayMs: 10_000 },
  ) {
    super();
  }

  start(): ConfigSnapshot {
    if (!existsSync(this.dir)) throw new Error(`config directory ${this.dir} does not exist`);
    this.reload();
    return this.snapshot;
  }

  /** One non-recursive watcher per directory (recursive fs.watch misses renames on Node 20). */
  private watchTree(): void {
    const dirs = new Set<string>();
    const walk = (d: string) => {
      dirs.add(d);
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory() && !e.name.startsWith('.')) walk(join(d, e.name));
    };
    try {
      walk(this.dir);
    } catch {}
    for (const [d, w] of this.watchers)
      if (!dirs.has(d)) {
        w.close();
        this.watchers.delete(d);
      }
    for (const d of dirs) if (!this.watchers.has(d)) this.watchers.set(d, watch(d, () => this.changed()));
  }

  private changed(): void {
    const now = Date.now();
    if (!this.timer) this.firstChangeAt = now;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.debounce.quietMs, this.firstChangeAt + this.debounce.maxDelayMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reload();
    }, wait);
  }

  reload(): void {
    this.watchTree();
    const { objects, problems } = loadManifests([this.dir], { runnable: false });
    const next = new Map<string, { object: KObject; file: string }>();
    for (const o of objects) next.set(keyOf(o), { object: o, file: (o as { __source?: string }).__source ?? '' });
    // Keep the last good version of objects that are now invalid or in a file that broke.
    const brokenFiles = new Set(problems.filter((p) => p.object.startsWith('document')).map((p) => p.file.replace(/:\d+$/, '')));
    const invalid = new Set(problems.map((p) => p.object));
    for (const [key, prev] of this.lastGood)
      if (!next.has(key) && (invalid.has(labelOf(prev.object)) || brokenFiles.has(prev.file))) next.set(key, prev);
    this.lastGood = next;
    for (const p of problems) this.log.warn({ problem: formatProblem(p) }, 'invalid configuration skipped');
    this.snapshot = { objects: [...next.values()].map((v) => v.object), problems };
    this.emit('update', this.snapshot);
  }

  close(): void {
    clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
  }
}
