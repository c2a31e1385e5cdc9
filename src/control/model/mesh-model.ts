// The whole mesh model from the configuration objects: workloads, services and the L4 policies
// agents enforce, plus every problem found. Rebuilt in full on each change (it is cheap at lab
// scale; the resource store turns it into deltas), so no incremental bookkeeping can drift.
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { KObject, Pod } from '../../lab/objects.ts';
import { translateAuthorizationPolicy } from './authorization.ts';
import { effectivePeerAuthn, translatePeerAuthentication, type PeerAuthn } from './peer-authentication.ts';
import { buildService, buildWorkload, isPod, isService, type MeshOptions } from './workloads.ts';

export interface ModelProblem {
  kind: string;
  namespace: string;
  name: string;
  field: string;
  reason: string;
}

export interface MeshModel {
  workloads: Workload[];
  services: Service[];
  policies: AuthorizationPolicy[];
  problems: ModelProblem[];
  /** Node authorization for the CA: may this node obtain this identity? */
  canIssue(node: string, id: SpiffeId): boolean;
}

const AUTHZ_KINDS = new Set(['AuthorizationPolicy', 'PeerAuthentication']);
const SECURITY_GROUP = /^security\.istio\.io\/v1(beta1)?$/;

export function buildMeshModel(objects: KObject[], o: MeshOptions): MeshModel {
  const problems: ModelProblem[] = [];
  const problem = (obj: KObject, field: string, reason: string) =>
    problems.push({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field, reason });

  const policies = new Map<string, AuthorizationPolicy>();
  const selectorPolicies: { key: string; namespace: string; selector: Record<string, string> }[] = [];
  const peerAuthns: PeerAuthn[] = [];
  for (const obj of objects) {
    if (!AUTHZ_KINDS.has(obj.kind)) continue;
    if (!SECURITY_GROUP.test(obj.apiVersion)) {
      problem(obj, 'apiVersion', `unsupported version ${obj.apiVersion} (security.istio.io/v1 or v1beta1)`);
      continue;
    }
    if (obj.kind === 'AuthorizationPolicy') {
      const t = translateAuthorizationPolicy(obj, { rootNamespace: o.rootNamespace, trustDomain: o.trustDomain });
      for (const p of t.problems) problem(obj, p.field, p.reason);
      if (!t.policy) continue;
      policies.set(policyKey(t.policy), t.policy);
      if (t.policy.scope === 'WORKLOAD_SELECTOR' && t.selector) selectorPolicies.push({ key: policyKey(t.policy), namespace: t.policy.namespace, selector: t.selector });
    } else {
      const t = translatePeerAuthentication(obj, { rootNamespace: o.rootNamespace, trustDomain: o.trustDomain });
      for (const p of t.problems) problem(obj, p.field, p.reason);
      if (t.peerAuthn) peerAuthns.push(t.peerAuthn);
    }
  }

  const kServices = objects.filter(isService);
  const pods = objects.filter(isPod);
  const workloads: Workload[] = [];
  const identitiesByNode = new Map<string, Set<string>>();
  for (const pod of pods) {
    const w = buildWorkload(pod, kServices, selectorPolicies, o);
    if (!w) continue;
    // PeerAuthentication resolves per workload into at most one DENY policy it names.
    const pa = effectivePeerAuthn({ namespace: w.namespace, labels: pod.metadata.labels ?? {} }, peerAuthns, o.rootNamespace);
    if (pa.policy) {
      policies.set(policyKey(pa.policy), pa.policy);
      w.authorizationPolicies = [...w.authorizationPolicies, policyKey(pa.policy)].sort();
    }
    workloads.push(w);
  }
  for (const pod of pods) addIdentity(identitiesByNode, pod, o);
  return {
    workloads,
    services: kServices.flatMap((s) => buildService(s, o) ?? []),
    policies: [...policies.values()],
    problems,
    canIssue: (node, id) => id.trustDomain === o.trustDomain && !!identitiesByNode.get(node)?.has(`${id.namespace}/${id.serviceAccount}`),
  };
}

/** Identities a node may obtain: those of pods scheduled there (running or starting). */
function addIdentity(m: Map<string, Set<string>>, pod: Pod, _o: MeshOptions) {
  const node = pod.spec.nodeName;
  if (!node || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
  const set = m.get(node) ?? new Set<string>();
  set.add(`${pod.metadata.namespace ?? 'default'}/${pod.spec.serviceAccountName ?? 'default'}`);
  m.set(node, set);
}
