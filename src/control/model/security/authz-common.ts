// Shared by the AuthorizationPolicy and PeerAuthentication translators: problem reporting, the
// shape checks every Kubernetes object goes through, and Istio's string/IP/port value syntax.
import { isIP } from 'node:net';
import type { IpBlock, StringMatch } from '../../../api/mesh.ts';

export interface Problem {
  /** Path into the object, e.g. spec.rules[0].from[0].source.ipBlocks[1]. */
  field: string;
  reason: string;
}

export interface TranslateOptions {
  rootNamespace?: string;
  trustDomain?: string;
}

export const DEFAULT_ROOT_NAMESPACE = 'istio-system';

export type Obj = Record<string, unknown>;

export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reports every key of `o` outside `known`; returns whether any was found. */
export function unknownKeys(o: Obj, known: readonly string[], path: string, problems: Problem[]): boolean {
  let found = false;
  for (const k of Object.keys(o)) {
    if (known.includes(k)) continue;
    problems.push({ field: `${path}.${k}`, reason: 'unknown field' });
    found = true;
  }
  return found;
}

export interface ObjectMeta {
  name: string;
  namespace: string;
  annotations: Record<string, string>;
  creationTimestamp: string;
}

/** Checks apiVersion/kind and reads the metadata every translation needs; undefined (reported) if unusable. */
export function readMeta(obj: unknown, kind: string, problems: Problem[]): { meta: ObjectMeta; spec: unknown } | undefined {
  if (!isObj(obj)) {
    problems.push({ field: '', reason: 'not an object' });
    return undefined;
  }
  if (obj.apiVersion !== 'security.istio.io/v1' && obj.apiVersion !== 'security.istio.io/v1beta1') {
    problems.push({ field: 'apiVersion', reason: `unsupported apiVersion ${String(obj.apiVersion)}` });
    return undefined;
  }
  if (obj.kind !== kind) {
    problems.push({ field: 'kind', reason: `expected ${kind}` });
    return undefined;
  }
  const md = isObj(obj.metadata) ? obj.metadata : {};
  const name = md.name;
  const namespace = md.namespace;
  if (typeof name !== 'string' || !name || typeof namespace !== 'string' || !namespace) {
    problems.push({ field: 'metadata', reason: 'name and namespace are required' });
    return undefined;
  }
  const annotations: Record<string, string> = {};
  if (isObj(md.annotations)) for (const [k, v] of Object.entries(md.annotations)) if (typeof v === 'string') annotations[k] = v;
  const creationTimestamp = typeof md.creationTimestamp === 'string' ? md.creationTimestamp : '';
  return { meta: { name, namespace, annotations, creationTimestamp }, spec: obj.spec };
}

/** `spec.selector`: matchLabels only (Istio has no matchExpressions); anything else is reported. */
export function readSelector(v: unknown, path: string, problems: Problem[]): { labels?: Record<string, string>; bad: boolean } {
  if (v === undefined || v === null) return { bad: false };
  if (!isObj(v)) {
    problems.push({ field: path, reason: 'expected an object' });
    return { bad: true };
  }
  let bad = unknownKeys(v, ['matchLabels'], path, problems);
  const labels: Record<string, string> = {};
  if (v.matchLabels !== undefined) {
    if (!isObj(v.matchLabels)) {
      problems.push({ field: `${path}.matchLabels`, reason: 'expected a map of strings' });
      return { bad: true };
    }
    for (const [k, l] of Object.entries(v.matchLabels)) {
      if (typeof l === 'string') labels[k] = l;
      else {
        problems.push({ field: `${path}.matchLabels.${k}`, reason: 'expected a string' });
        bad = true;
      }
    }
  }
  return { labels, bad };
}

/** Istio's wildcard syntax: "*" presence, "*x" suffix, "x*" prefix, else exact. */
export function toStringMatch(v: string): StringMatch {
  if (v === '*') return { presence: {} };
  if (v.startsWith('*')) return { suffix: v.slice(1) };
  if (v.endsWith('*')) return { prefix: v.slice(0, -1) };
  return { exact: v };
}

/**
 * Principals are compared WITHOUT the spiffe:// scheme (like Istio's source.principal:
 * "cluster.local/ns/a/sa/b"), so a scheme written into a policy is dropped here rather than
 * silently never matching.
 */
export function toPrincipalMatch(v: string): StringMatch {
  const m = toStringMatch(v);
  if ('exact' in m && m.exact.startsWith('spiffe://')) return { exact: m.exact.slice('spiffe://'.length) };
  if ('prefix' in m && m.prefix.startsWith('spiffe://')) return { prefix: m.prefix.slice('spiffe://'.length) };
  return m;
}

/** "10.0.0.1" or "10.0.0.0/8" (IPv4 or IPv6); undefined when invalid. */
export function toIpBlock(v: string): IpBlock | undefined {
  const slash = v.indexOf('/');
  const address = slash < 0 ? v : v.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  if (slash < 0) return { address, length: max };
  const len = v.slice(slash + 1);
  if (!/^\d{1,3}$/.test(len) || Number(len) > max) return undefined;
  return { address, length: Number(len) };
}

/** A port as Istio writes it (a decimal string; a YAML number is accepted too); undefined when invalid. */
export function toPort(v: unknown): number | undefined {
  const s = typeof v === 'number' ? String(v) : v;
  if (typeof s !== 'string' || !/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}
