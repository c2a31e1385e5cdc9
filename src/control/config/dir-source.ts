// Configuration from a directory of Kubernetes YAML, watched for changes. Each reload re-parses
// the files that changed (size or mtime); an object whose new version is invalid (or whose file no longer parses) keeps its
// last good version in force, so a bad edit never takes anything away.
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { loadManifests, type ParseCache } from '../../lab/manifest.ts';
import type { KObject } from '../../lab/objects.ts';
import { DEFAULT_DEBOUNCE, Debouncer, LastGoodStore, labelOf, type ConfigSnapshot, type DebounceOptions } from './config-store.ts';

export type { ConfigSnapshot } from './config-store.ts';

const sourceOf = (o: KObject) => (o as { __source?: string }).__source ?? '';

export class DirSource extends EventEmitter {
  private watchers = new Map<string, FSWatcher>();
  private readonly debouncer: Debouncer;
  private readonly store = new LastGoodStore();
  private readonly parsed: ParseCache = new Map();
  snapshot: ConfigSnapshot = { objects: [], problems: [] };

  constructor(
    readonly dir: string,
    /** Push after this much quiet, and at most this late under constant churn (Istio: 100 ms, 10 s). */
    debounce: DebounceOptions = DEFAULT_DEBOUNCE,
  ) {
    super();
    this.debouncer = new Debouncer(() => this.reload(), debounce);
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
    for (const d of dirs) if (!this.watchers.has(d)) this.watchers.set(d, watch(d, () => this.debouncer.trigger()));
  }

  reload(): void {
    this.watchTree();
    const { objects, problems } = loadManifests([this.dir], { runnable: false }, this.parsed);
    // An object missing now stays if its new version is invalid or its file no longer parses.
    const brokenFiles = new Set(problems.filter((p) => p.object.startsWith('document')).map((p) => p.file.replace(/:\d+$/, '')));
    const invalid = new Set(problems.map((p) => p.object));
    this.snapshot = this.store.update(objects, problems, (prev) => invalid.has(labelOf(prev)) || brokenFiles.has(sourceOf(prev)));
    this.emit('update', this.snapshot);
  }

  close(): void {
    this.debouncer.cancel();
    for (const w of this.watchers.values()) w.close();
  }
}
