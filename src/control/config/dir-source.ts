// Configuration from a directory of Kubernetes YAML, watched for changes. A reload reads only the
// files whose size or mtime changed, and in them parses only the documents whose text changed; the
// store then hears of the objects those files hold now and of those they no longer hold. An object
// whose new version is invalid (or whose file no longer parses) keeps its last good version in
// force, so a bad edit never takes anything away.
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { expandPaths, parseManifestText, type DocCache, type LoadResult, type ManifestProblem } from '../../kube/manifest.ts';
import type { KObject } from '../../kube/objects.ts';
import { DEFAULT_DEBOUNCE, Debouncer, EMPTY_SNAPSHOT, LastGoodStore, labelOf, storeKey, type ConfigSnapshot, type DebounceOptions } from './config-store.ts';

export type { ConfigSnapshot } from './config-store.ts';

interface FileState {
  mtimeMs: number;
  size: number;
  /**
   * Read within RACY_MS of its mtime: a write in the same clock tick (file times are only as fine as
   * the kernel's coarse clock) would leave mtime and size as they were, so read it again next time.
   */
  racy: boolean;
  result: LoadResult;
  docs: DocCache;
  /** Keys of the objects this file holds in force (valid now, or kept while invalid). */
  keys: Set<string>;
}

/** Beyond any file system's timestamp granularity, with room for clock steps. */
const RACY_MS = 2000;

const sourceOf = (o: KObject) => (o as { __source?: string }).__source ?? '';

export class DirSource extends EventEmitter {
  private watchers = new Map<string, FSWatcher>();
  private readonly debouncer: Debouncer;
  private readonly store = new LastGoodStore();
  private readonly files = new Map<string, FileState>();
  /** key -> files that hold it (normally one) */
  private readonly owners = new Map<string, Set<string>>();
  snapshot: ConfigSnapshot = EMPTY_SNAPSHOT;

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
    const problems: ManifestProblem[] = [];
    let paths: string[] = [];
    try {
      paths = expandPaths([this.dir]);
    } catch (e) {
      problems.push({ file: (e as { path?: string }).path ?? this.dir, object: '-', field: '', reason: (e as Error).message });
    }
    const present = new Set(paths);
    for (const file of [...this.files.keys()]) if (!present.has(file)) this.drop(file);
    for (const file of paths) {
      const st = statSync(file, { throwIfNoEntry: false });
      const prev = this.files.get(file);
      if (!st) {
        if (prev) this.drop(file);
        continue;
      }
      if (prev && !prev.racy && prev.mtimeMs === st.mtimeMs && prev.size === st.size) continue;
      const racy = Date.now() - st.mtimeMs < RACY_MS;
      const docs = prev?.docs ?? new Map();
      let result: LoadResult;
      try {
        result = parseManifestText(readFileSync(file, 'utf8'), file, { runnable: false }, docs);
      } catch (e) {
        result = { objects: [], problems: [{ file, object: 'document 1', field: '', reason: (e as Error).message }] };
      }
      this.files.set(file, { mtimeMs: st.mtimeMs, size: st.size, racy, result, docs, keys: this.apply(file, result, prev?.keys) });
    }
    for (const f of this.files.values()) problems.push(...f.result.problems);
    this.snapshot = this.store.snapshot(problems);
    this.emit('update', this.snapshot);
  }

  /** A file read again: what it holds now goes in; what it no longer holds goes, unless only invalid now. */
  private apply(file: string, result: LoadResult, before: Set<string> = new Set()): Set<string> {
    const keys = new Set<string>();
    for (const o of result.objects) {
      const key = storeKey(o);
      keys.add(key);
      this.claim(key, file);
      this.store.put(o);
    }
    // A document-level problem (broken YAML, no name) hides what the document held: keep everything.
    const broken = result.problems.some((p) => p.object.startsWith('document'));
    const invalid = new Set(result.problems.map((p) => p.object));
    for (const key of before) {
      if (keys.has(key)) continue;
      const o = this.store.get(key);
      if (o && sourceOf(o) === file && (broken || invalid.has(labelOf(o)))) keys.add(key);
      else this.release(key, file);
    }
    return keys;
  }

  private drop(file: string): void {
    for (const key of this.files.get(file)?.keys ?? []) this.release(key, file);
    this.files.delete(file);
  }

  private claim(key: string, file: string): void {
    const set = this.owners.get(key);
    if (set) set.add(file);
    else this.owners.set(key, new Set([file]));
  }

  /** `file` no longer holds `key`: it goes, or another file's version of it takes over. */
  private release(key: string, file: string): void {
    const set = this.owners.get(key);
    set?.delete(file);
    if (!set?.size) {
      this.owners.delete(key);
      this.store.remove(key);
      return;
    }
    const o = this.store.get(key);
    if (o && sourceOf(o) !== file) return;
    for (const other of set) {
      const found = this.files.get(other)?.result.objects.find((x) => storeKey(x) === key);
      if (found) return void this.store.put(found);
    }
  }

  close(): void {
    this.debouncer.cancel();
    for (const w of this.watchers.values()) w.close();
  }
}
