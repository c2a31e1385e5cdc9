// What every configuration source shares: the snapshot it emits, the rule that an object whose new
// version is invalid keeps its last good version in force, and the debounce before a push.
import type { EventEmitter } from 'node:events';
import { isDeepStrictEqual } from 'node:util';
import { validateObject, type ManifestProblem } from '../../lab/manifest.ts';
import { isNamespaced, keyOf, type KObject } from '../../lab/objects.ts';

export interface ConfigSnapshot {
  objects: KObject[];
  problems: ManifestProblem[];
}

/** A directory or the Kubernetes API: emits 'update' with each new snapshot. */
export interface ConfigSource extends EventEmitter {
  readonly snapshot: ConfigSnapshot;
  start(): ConfigSnapshot | Promise<ConfigSnapshot>;
  close(): void;
}

/** "Kind ns/name", as problems name objects. */
export const labelOf = (o: { kind: string; metadata: { name: string; namespace?: string } }) =>
  isNamespaced(o.kind) ? `${o.kind} ${o.metadata.namespace}/${o.metadata.name}` : `${o.kind} ${o.metadata.name}`;

const KEY = Symbol('weft.storeKey');
/**
 * An object's key, kept on the object: every update looks up every object, and a key string built
 * once also keeps its hash, so 16,000 unchanged objects cost lookups, not string building.
 */
function storeKey(o: KObject): string {
  const tagged = o as KObject & { [KEY]?: string };
  if (tagged[KEY] === undefined) Object.defineProperty(tagged, KEY, { value: keyOf(o) }); // not enumerable: invisible to comparisons
  return tagged[KEY]!;
}

/**
 * The objects in force, by key; each update replaces them but never lets a bad edit take one away.
 * An object equal to the one in force is replaced by it, so an unchanged resource stays the same
 * object from one snapshot to the next and the model can reuse what it built from it.
 */
export class LastGoodStore {
  private good = new Map<string, KObject>();

  /**
   * `valid`: every object that validates now. A previously good object missing from it stays in
   * force when `broken(prev)` says it is still there, only invalid; otherwise it was deleted.
   */
  update(valid: KObject[], problems: ManifestProblem[], broken: (prev: KObject) => boolean): ConfigSnapshot {
    const next = new Map<string, KObject>();
    for (const o of valid) {
      const key = storeKey(o);
      const prev = this.good.get(key);
      next.set(key, prev && prev !== o && isDeepStrictEqual(prev, o) ? prev : o);
    }
    for (const [key, prev] of this.good) if (!next.has(key) && broken(prev)) next.set(key, prev);
    this.good = next;
    return { objects: [...next.values()], problems };
  }
}

export interface ApiObject {
  /** The object, or a function giving it (skipped when `ref` was validated before). */
  raw: unknown | (() => unknown);
  /** Where it came from, the problem's "file" (for the API: the object's path); a function is called only for a problem. */
  origin: string | (() => string);
  /** The informer's object: while it is the same object, its validation is not repeated. */
  ref?: object;
}

export type Validate = (raw: unknown) => ReturnType<typeof validateObject>;

/** Pods here run elsewhere, so the lab's "runnable" checks do not apply. */
export const validateForControl: Validate = (raw) => validateObject(raw, { runnable: false });

/** One object's validation: the object, or its problem and (when it names one) its key. */
export type Checked = { object: KObject } | { problem: ManifestProblem; key?: string };
export type ValidationCache = WeakMap<object, Checked>;

function check(raw: unknown, origin: string | (() => string), validate: Validate): Checked {
  const r = validate(raw);
  if (!('problem' in r)) return { object: r.object };
  const o = raw as Partial<KObject>;
  const named = typeof o?.kind === 'string' && typeof o.metadata?.name === 'string';
  return { problem: { file: typeof origin === 'function' ? origin() : origin, object: r.object ?? (named ? labelOf(o as KObject) : '-'), field: r.field, reason: r.problem }, key: named ? keyOf(o as KObject) : undefined };
}

/** Validates objects that arrive one by one (not in files); `invalid` holds the keys of those that failed. */
export function validateEach(items: ApiObject[], validate: Validate = validateForControl, cache?: ValidationCache) {
  const valid: KObject[] = [];
  const problems: ManifestProblem[] = [];
  const invalid = new Set<string>();
  for (const { raw, origin, ref } of items) {
    let r = ref && cache?.get(ref);
    if (!r) {
      r = check(typeof raw === 'function' ? (raw as () => unknown)() : raw, origin, validate);
      if (ref) cache?.set(ref, r);
    }
    if ('object' in r) valid.push(r.object);
    else {
      if (r.key) invalid.add(r.key);
      problems.push(r.problem);
    }
  }
  return { valid, problems, invalid };
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
