// Test harness: Kubernetes YAML -> translators -> the engine, with the control plane's selector
// and PeerAuthentication wiring done the simple way for one destination workload.
import { parseAllDocuments } from 'yaml';
import type { AuthorizationPolicy, Workload } from '../../../src/api/mesh.ts';
import { policyKey } from '../../../src/api/mesh.ts';
import type { SpiffeId } from '../../../src/api/spiffe.ts';
import { AuthorizationEngine, type RbacDecision } from '../../../src/agent/rbac/engine.ts';
import { translateAuthorizationPolicy } from '../../../src/control/model/security/authorization.ts';
import type { Problem } from '../../../src/control/model/security/authz-common.ts';
import { effectivePeerAuthn, translatePeerAuthentication, type PeerAuthn } from '../../../src/control/model/security/peer-authentication.ts';

export const ROOT = 'istio-system';

export function workload(over: Partial<Workload> = {}): Workload {
  return {
    uid: 'Kubernetes//Pod/foo/httpbin-1', name: 'httpbin-1', namespace: 'foo', addresses: ['10.0.1.10'], network: '', tunnelProtocol: 'HBONE',
    trustDomain: 'cluster.local', serviceAccount: 'httpbin', node: 'node-0', canonicalName: 'httpbin', canonicalRevision: 'v1', workloadType: 'DEPLOYMENT',
    workloadName: 'httpbin', services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes', ...over,
  };
}

export const id = (namespace: string, serviceAccount: string, trustDomain = 'cluster.local'): SpiffeId => ({ trustDomain, namespace, serviceAccount });

export interface World {
  evaluate(conn: { from?: SpiffeId; srcIp?: string; dstPort?: number; dstIp?: string }): RbacDecision;
  policies: Map<string, AuthorizationPolicy>;
  dst: Workload;
  problems: Problem[];
}

/** Builds the snapshot the control plane would publish for `yaml`, with httpbin (app=httpbin, ns foo) as the destination. */
export function world(yaml: string, labels: Record<string, string> = { app: 'httpbin' }, dstOver: Partial<Workload> = {}): World {
  const policies = new Map<string, AuthorizationPolicy>();
  const peerAuthns: PeerAuthn[] = [];
  const problems: Problem[] = [];
  const dst = workload(dstOver);
  const selected: string[] = [];
  for (const doc of parseAllDocuments(yaml)) {
    const obj: unknown = doc.toJS();
    if (!obj) continue;
    if ((obj as { kind?: string }).kind === 'PeerAuthentication') {
      const t = translatePeerAuthentication(obj, { rootNamespace: ROOT });
      problems.push(...t.problems);
      if (t.peerAuthn) peerAuthns.push(t.peerAuthn);
      continue;
    }
    const t = translateAuthorizationPolicy(obj, { rootNamespace: ROOT });
    problems.push(...t.problems);
    // A targetRefs policy is the waypoint's; the mesh model gives it to agents only for a target no
    // waypoint serves (test/control/model/security/waypoint-targets.test.ts), which needs Services.
    if (!t.policy || t.targeted) continue;
    policies.set(policyKey(t.policy), t.policy);
    const sel = t.selector;
    const sameNs = t.policy.namespace === dst.namespace || t.policy.namespace === ROOT;
    if (sel && sameNs && Object.entries(sel).every(([k, v]) => labels[k] === v)) selected.push(policyKey(t.policy));
  }
  const pa = effectivePeerAuthn({ namespace: dst.namespace, labels }, peerAuthns, ROOT);
  if (pa.policy) {
    policies.set(policyKey(pa.policy), pa.policy);
    selected.push(policyKey(pa.policy));
  }
  dst.authorizationPolicies = selected.sort();
  const engine = new AuthorizationEngine(policies, ROOT);
  return {
    policies,
    dst,
    problems,
    evaluate: (c) => engine.evaluate({ srcIdentity: c.from, srcIp: c.srcIp ?? '10.0.2.5', dstIp: c.dstIp ?? dst.addresses[0]!, dstPort: c.dstPort ?? 8080 }, dst),
  };
}
