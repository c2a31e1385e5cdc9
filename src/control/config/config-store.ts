// What every configuration source shares: the snapshot it emits, the rule that an object whose new
// version is invalid keeps its last good version in force, and the debounce before a push.
//
// Sources report changes one object at a time (a file that changed, a watch event), and a snapshot
// groups objects by namespace and kind: a kind's list is the same array while none of its objects
// changed, a namespace the same group while nothing in it did. Builders compare those by identity,
// so one pod change costs what its namespace holds, not what the cluster holds.
import type { EventEmitter } from 'node:events';
import { isDeepStrictEqual } from 'node:util';
import { validateObject, type ManifestProblem } from '../../kube/manifest.ts';
import { isNamespaced, keyOf, type KObject } from '../../kube/objects.ts';

/** One namespace's objects by kind (cluster-scoped objects are in the group named ''). */
export interface NsObjects {
  readonly kinds: ReadonlyMap<string, readonly KObject[]>;
}

const NONE: readonly KObject[] = [];
/** A group's objects of one kind: the same array while none of them changed. */
export const ofKind = <T extends KObject = KObject>(g: NsObjects | undefined, kind: string): readonly T[] => (g?.kinds.get(kind) ?? NONE) as readonly T[];

/** The namespace an object is grouped under. */
export const groupOf = (o: KObject) => o.metadata.namespace ?? '';

/** The configuration in force: every valid object (or its last good version) and every problem. */
export class ConfigSnapshot {
  private flat?: KObject[];

  constructor(
    /** Objects by namespace; a namespace with no change since the last snapshot keeps its group object. */
    readonly namespaces: ReadonlyMap<string, NsObjects>,
    readonly problems: ManifestProblem[],
  ) {}

  /** Every object, namespace by namespace (built on first use: the builders read the groups). */
  get objects(): readonly KObject[] {
    if (!this.flat) {
      this.flat = [];
      for (const g of this.namespaces.values()) for (const list of g.kinds.values()) for (const o of list) this.flat.push(o);
    }
    return this.flat;
  }

  /** A snapshot of a list of objects, for one-shot use (`weft analyze`, tests). */
  static of(objects: readonly KObject[], problems: ManifestProblem[] = []): ConfigSnapshot {
    const store = new LastGoodStore();
    for (const o of objects) store.put(o);
    return store.snapshot(problems);
  }
}

/** A source: emits 'update' with each new snapshot. */
export interface ConfigSource extends EventEmitter {
  readonly snapshot: ConfigSnapshot;
  start(): ConfigSnapshot | Promise<ConfigSnapshot>;
  close(): void;
}

export const EMPTY_SNAPSHOT = new ConfigSnapshot(new Map(), []);

/** "Kind ns/name", as problems name objects. */
export const labelOf = (o: { kind: string; metadata: { name: string; namespace?: string } }) =>
  isNamespaced(o.kind) ? `${o.kind} ${o.metadata.namespace}/${o.metadata.name}` : `${o.kind} ${o.metadata.name}`;

const KEY = Symbol('weft.storeKey');
/** An object's key, kept on the object (not enumerable: invisible to comparisons). */
export function storeKey(o: KObject): string {
  const tagged = o as KObject & { [KEY]?: string };
  if (tagged[KEY] === undefined) Object.defineProperty(tagged, KEY, { value: keyOf(o) });
  return tagged[KEY]!;
}

/**
 * The objects in force. Sources put what is valid and remove what was deleted; what they do not
 * touch stays, which is how a bad edit keeps the last good version. An object equal to the one in
 * force is not a change: the object in force stays, so the model reuses what it built from it.
 */
export class LastGoodStore {
  private readonly all = new Map<string, KObject>();
  /** namespace -> kind -> key -> object, in the order objects first appeared */
  private readonly index = new Map<string, Map<string, Map<string, KObject>>>();
  private groups = new Map<string, NsObjects>();
  /** namespace -> kinds changed since the last snapshot */
  private readonly dirty = new Map<string, Set<string>>();

  get(key: string): KObject | undefined {
    return this.all.get(key);
  }

  keys(): IterableIterator<string> {
    return this.all.keys();
  }

  /** Puts a valid object; returns the object in force for its key. */
  put(o: KObject): KObject {
    const key = storeKey(o);
    const prev = this.all.get(key);
    if (prev === o || (prev && isDeepStrictEqual(prev, o))) return prev;
    this.all.set(key, o);
    const ns = groupOf(o);
    let kinds = this.index.get(ns);
    if (!kinds) this.index.set(ns, (kinds = new Map()));
    let byKey = kinds.get(o.kind);
    if (!byKey) kinds.set(o.kind, (byKey = new Map()));
    byKey.set(key, o);
    this.touch(ns, o.kind);
    return o;
  }

  remove(key: string): void {
    const prev = this.all.get(key);
    if (!prev) return;
    this.all.delete(key);
    const ns = groupOf(prev);
    const kinds = this.index.get(ns)!;
    const byKey = kinds.get(prev.kind)!;
    byKey.delete(key);
    if (!byKey.size) kinds.delete(prev.kind);
    if (!kinds.size) this.index.delete(ns);
    this.touch(ns, prev.kind);
  }

  /** The objects in force now; only namespaces with changes are grouped again. */
  snapshot(problems: ManifestProblem[]): ConfigSnapshot {
    if (this.dirty.size) {
      const next = new Map(this.groups);
      for (const [ns, changedKinds] of this.dirty) {
        const kinds = this.index.get(ns);
        if (!kinds) {
          next.delete(ns);
          continue;
        }
        const before = this.groups.get(ns)?.kinds;
        const lists = new Map<string, readonly KObject[]>();
        for (const [kind, byKey] of kinds) lists.set(kind, changedKinds.has(kind) || !before?.has(kind) ? [...byKey.values()] : before.get(kind)!);
        next.set(ns, { kinds: lists });
      }
      this.dirty.clear();
      this.groups = next;
    }
    return new ConfigSnapshot(this.groups, problems);
  }

  private touch(ns: string, kind: string): void {
    const set = this.dirty.get(ns);
    if (set) set.add(kind);
    else this.dirty.set(ns, new Set([kind]));
  }
}

export type Validate = (raw: unknown) => ReturnType<typeof validateObject>;

/** Pods here run elsewhere, so the lab's "runnable" checks do not apply. */
export const validateForControl: Validate = (raw) => validateObject(raw, { runnable: false });

/** One object's validation: the object, or its problem. */
export type Checked = { object: KObject } | { problem: ManifestProblem };

/** Validates one object that arrived alone (not in a file); `origin` (the problem's "file") is called only for a problem. */
export function checkObject(raw: unknown, origin: () => string, validate: Validate = validateForControl): Checked {
  const r = validate(raw);
  if (!('problem' in r)) return { object: r.object };
  const o = raw as Partial<KObject>;
  const named = typeof o?.kind === 'string' && typeof o.metadata?.name === 'string';
  return { problem: { file: origin(), object: r.object ?? (named ? labelOf(o as KObject) : '-'), field: r.field, reason: r.problem } };
}

export interface DebounceOptions {
  quietMs: number;
  maxDelayMs: number;
}

/** Istio's push debounce: run after `quietMs` without changes, and at most `maxDelayMs` after the first. */
export const DEFAULT_DEBOUNCE: DebounceOptions = { quietMs: 100, maxDelayMs: 10_000 };

export class Debouncer {
  private timer?: NodeJS.Timeout;
  private firstChangeAt = 0;

  constructor(
    private readonly fn: () => void,
    private readonly opts: DebounceOptions = DEFAULT_DEBOUNCE,
  ) {}

  trigger(): void {
    const now = Date.now();
    if (!this.timer) this.firstChangeAt = now;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.quietMs, this.firstChangeAt + this.opts.maxDelayMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.fn();
    }, wait);
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
