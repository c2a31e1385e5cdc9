// The lab's object store, its stand-in for the API server's storage: the objects users applied,
// keyed as the API keys them, with the fields the server sets (uid, creationTimestamp) and the
// checks `kubectl apply` gets from it (the namespace exists, the node exists, nothing changed).
import { createHash, randomUUID } from 'node:crypto';
import { isNamespaced, keyOf, type KObject, type Pod } from '../kube/objects.ts';

export interface ApplyOutcome {
  object: string; // "Kind ns/name"
  result: 'created' | 'configured' | 'unchanged' | 'deleted' | 'not found' | 'error';
  error?: string;
}

export const hashOf = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex');
const label = (o: KObject) => `${o.kind} ${o.metadata.namespace ? o.metadata.namespace + '/' : ''}${o.metadata.name}`;

/** Namespaces every lab starts with. */
export const INITIAL_NAMESPACES = ['default', 'kube-system', 'istio-system'];

export class ObjectStore {
  private objects = new Map<string, KObject>();

  /** Adds the namespaces a new cluster has. */
  seed(): void {
    for (const ns of INITIAL_NAMESPACES)
      this.objects.set(keyOf({ kind: 'Namespace', metadata: { name: ns } }), { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, uid: randomUUID() } });
  }

  values(): IterableIterator<KObject> {
    return this.objects.values();
  }

  ofKind<T extends KObject>(kind: string): T[] {
    return [...this.objects.values()].filter((o): o is T => o.kind === kind);
  }

  /** An object by its key (`Kind/namespace/name`, as keyOf makes it). */
  get(key: string): KObject | undefined {
    return this.objects.get(key);
  }

  namespace(name: string | undefined): KObject | undefined {
    return this.objects.get(`Namespace//${name}`);
  }

  /** Stores an object as a controller makes it (no checks, server fields already set). */
  put(o: KObject): void {
    this.objects.set(keyOf(o), o);
  }

  remove(o: KObject): void {
    this.objects.delete(keyOf(o));
  }

  /** Removes every object for which `drop` is true (garbage collection). */
  removeWhere(drop: (o: KObject) => boolean): void {
    for (const [k, o] of this.objects) if (drop(o)) this.objects.delete(k);
  }

  /** `kubectl apply`: namespaces first, then what lives in them; nodeExists checks spec.nodeName. */
  apply(objs: KObject[], nodeExists: (name: string) => boolean): ApplyOutcome[] {
    const order = (k: string) => ['Namespace', 'ServiceAccount', 'Service', 'Deployment', 'Pod'].indexOf(k) + 1 || 9;
    const sorted = [...objs].sort((a, b) => order(a.kind) - order(b.kind));
    const out: ApplyOutcome[] = [];
    for (const raw of sorted) {
      const o = structuredClone(raw);
      delete (o as { __source?: string }).__source;
      const ns = o.metadata.namespace;
      if (ns && isNamespaced(o.kind) && !this.objects.has(`Namespace//${ns}`)) {
        out.push({ object: label(o), result: 'error', error: `metadata.namespace: namespace "${ns}" not found` });
        continue;
      }
      if (o.kind === 'Pod') {
        const nodeName = (o as Pod).spec.nodeName;
        if (nodeName && !nodeExists(nodeName)) {
          out.push({ object: label(o), result: 'error', error: `spec.nodeName: node "${nodeName}" not found` });
          continue;
        }
      }
      const key = keyOf(o);
      const prev = this.objects.get(key);
      // A pod keeps the node it was scheduled to when re-applied without one.
      if (o.kind === 'Pod' && prev && !(o as Pod).spec.nodeName) (o as Pod).spec.nodeName = (prev as Pod).spec.nodeName;
      o.metadata.uid = prev?.metadata.uid ?? randomUUID();
      o.metadata.creationTimestamp = prev?.metadata.creationTimestamp ?? new Date().toISOString();
      if (prev && hashOf(strip(prev)) === hashOf(strip(o))) {
        out.push({ object: label(o), result: 'unchanged' });
        continue;
      }
      this.objects.set(key, o);
      out.push({ object: label(o), result: prev ? 'configured' : 'created' });
    }
    return out;
  }

  /** `kubectl delete`: a namespace takes what lives in it along. */
  delete(objs: { kind: string; metadata: { name: string; namespace?: string } }[]): ApplyOutcome[] {
    const out: ApplyOutcome[] = [];
    for (const o of objs) {
      const key = keyOf({ kind: o.kind, metadata: { name: o.metadata.name, namespace: isNamespaced(o.kind) ? (o.metadata.namespace ?? 'default') : undefined } });
      const prev = this.objects.get(key);
      if (!prev) {
        out.push({ object: `${o.kind} ${o.metadata.name}`, result: 'not found' });
        continue;
      }
      this.objects.delete(key);
      if (prev.kind === 'Namespace')
        for (const [k, v] of this.objects) if (v.metadata.namespace === prev.metadata.name) this.objects.delete(k);
      out.push({ object: label(prev), result: 'deleted' });
    }
    return out;
  }
}

/** What makes two versions of an object different for `apply` (server-set fields excluded). */
function strip(o: KObject): unknown {
  const { uid: _u, creationTimestamp: _c, ...meta } = o.metadata;
  return { ...o, metadata: meta, status: undefined };
}
