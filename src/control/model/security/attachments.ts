// Which objects attach to a waypoint, and where: Istio's policy attachment by `targetRefs` (or the
// older single `targetRef`) for AuthorizationPolicy, RequestAuthentication and Telemetry. A ref
// names a Gateway (the waypoint: everything through it), a Service or a ServiceEntry (that host's
// ports) in the object's own namespace. Objects without refs are not attached here: a selector
// policy is the agents' (L4), and namespace- or mesh-wide Telemetry is read by its own translator.
//
// A ref weft cannot follow (another group or kind, a namespace other than the object's) is a
// problem naming the field; the object stays attached to the refs it can follow. Whether the
// translated object is safe without the ref is the translator's call (fail closed).
import type { KObject } from '../../../kube/objects.ts';
import { ofKind, type NsObjects } from '../../config/config-store.ts';
import type { NetworkingProblem } from '../networking/common.ts';

export const ATTACHABLE_KINDS = ['AuthorizationPolicy', 'RequestAuthentication', 'Telemetry'] as const;

export type TargetKind = 'Gateway' | 'Service' | 'ServiceEntry';

export interface TargetRef {
  kind: TargetKind;
  name: string;
}

const GROUPS: Record<TargetKind, string[]> = {
  Gateway: ['gateway.networking.k8s.io'],
  Service: ['', 'core'],
  ServiceEntry: ['networking.istio.io'],
};

/** One namespace's attached objects by target ("Kind/name"), each with the refs it was attached by. */
export interface Attachments {
  readonly byTarget: ReadonlyMap<string, readonly KObject[]>;
  readonly problems: readonly NetworkingProblem[];
}

export const EMPTY_ATTACHMENTS: Attachments = { byTarget: new Map(), problems: [] };

export const targetKey = (t: TargetRef) => `${t.kind}/${t.name}`;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether an object names targets at all (then it is the waypoint's, not the agents'). */
export function hasTargetRefs(spec: unknown): boolean {
  return isObj(spec) && (spec.targetRef !== undefined || spec.targetRefs !== undefined);
}

/** The refs an object's spec names that weft can follow; the others are reported. */
export function readTargetRefs(obj: KObject, problems: NetworkingProblem[]): TargetRef[] {
  const spec = (obj as { spec?: unknown }).spec;
  if (!isObj(spec)) return [];
  const at = (field: string, reason: string) => problems.push({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field, reason });
  const raw: [unknown, string][] = [];
  if (spec.targetRef !== undefined) raw.push([spec.targetRef, 'spec.targetRef']);
  if (spec.targetRefs !== undefined) {
    if (!Array.isArray(spec.targetRefs)) at('spec.targetRefs', 'expected a list');
    else spec.targetRefs.forEach((r, i) => raw.push([r, `spec.targetRefs[${i}]`]));
  }
  const out: TargetRef[] = [];
  for (const [r, field] of raw) {
    if (!isObj(r) || typeof r.kind !== 'string' || typeof r.name !== 'string' || !r.name) {
      at(field, 'expected an object with kind and name: not attached there');
      continue;
    }
    const groups = GROUPS[r.kind as TargetKind];
    if (!groups) {
      at(`${field}.kind`, `${r.kind} is not a kind a waypoint policy attaches to (Gateway, Service, ServiceEntry): not attached there`);
      continue;
    }
    const group = typeof r.group === 'string' ? r.group : '';
    if (!groups.includes(group)) {
      at(`${field}.group`, `${JSON.stringify(group)} is not the group of ${r.kind} (${groups.filter(Boolean).join(' or ') || 'the core group ""'}): not attached there`);
      continue;
    }
    if (r.namespace !== undefined && r.namespace !== obj.metadata.namespace) {
      at(`${field}.namespace`, 'a ref names an object of the policy\'s own namespace only: not attached there');
      continue;
    }
    out.push({ kind: r.kind as TargetKind, name: r.name });
  }
  return out;
}

/** A namespace's attachable objects, kind by kind: the same arrays while none of them changed. */
export const attachableLists = (g: NsObjects | undefined): (readonly KObject[])[] => ATTACHABLE_KINDS.map((k) => ofKind(g, k));

/** A namespace's attachments from its attachable lists (attachableLists). */
export function attachmentsOf(lists: readonly (readonly KObject[])[]): Attachments {
  if (lists.every((l) => !l.length)) return EMPTY_ATTACHMENTS;
  const byTarget = new Map<string, KObject[]>();
  const problems: NetworkingProblem[] = [];
  for (const list of lists)
    for (const o of list)
      for (const t of readTargetRefs(o, problems)) {
        const k = targetKey(t);
        const at = byTarget.get(k);
        if (!at) byTarget.set(k, [o]);
        else if (!at.includes(o)) at.push(o);
      }
  return byTarget.size || problems.length ? { byTarget, problems } : EMPTY_ATTACHMENTS;
}
