// L4 authorization as ztunnel decides it, over one immutable policy snapshot.
//
// Policies applying to a destination: GLOBAL ones from the root namespace, NAMESPACE ones of its
// namespace, and every policy it names in `authorizationPolicies` (WORKLOAD_SELECTOR, including
// the converted PeerAuthentication ones, which may live in the root namespace). Decision: any
// matching DENY denies; otherwise no ALLOW policy means allow; otherwise some ALLOW must match.
// AUDIT policies are reported when they match and never decide.
//
// A workload naming a policy the snapshot lacks is denied: the missing one might be a DENY (e.g.
// PeerAuthentication STRICT), and the control plane publishes policies with the workloads.
import type { AuthorizationPolicy, Workload } from '../../api/mesh.ts';
import { policyKey } from '../../api/mesh.ts';
import type { SpiffeId } from '../../api/spiffe.ts';
import { compilePolicy, normalIp, type CompiledPolicy, type ConnFacts } from './compile.ts';

export interface RbacConnection {
  /** undefined = plaintext / unauthenticated peer. */
  srcIdentity?: SpiffeId;
  srcIp: string;
  dstIp: string;
  dstPort: number;
}

export interface RbacDecision {
  allowed: boolean;
  /** The deciding policy: a DENY key, the matching ALLOW key, or a description of the denial. */
  policy?: string;
  /** Keys of the matching AUDIT policies. */
  audit: string[];
}

/** Istio's source.principal form: the SPIFFE id without its scheme. */
export const istioPrincipal = (id: SpiffeId) => `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;

interface Applicable {
  deny: CompiledPolicy[];
  allow: CompiledPolicy[];
  audit: CompiledPolicy[];
  missing: string[];
}

const byKey = (a: CompiledPolicy, b: CompiledPolicy) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

export class AuthorizationEngine {
  private readonly all = new Map<string, CompiledPolicy>();
  private readonly global: CompiledPolicy[] = [];
  private readonly byNamespace = new Map<string, CompiledPolicy[]>();
  /** Applicable sets per (namespace, selected policy names): few distinct ones per snapshot. */
  private readonly cache = new Map<string, Applicable>();

  constructor(policies: Map<string, AuthorizationPolicy>, readonly rootNamespace = 'istio-system') {
    for (const p of policies.values()) {
      // Keyed by the policy's own namespace/name: workloads refer to policies by that key.
      const c = compilePolicy(policyKey(p), p);
      this.all.set(c.key, c);
      if (p.scope === 'GLOBAL' && p.namespace === rootNamespace) this.global.push(c);
      else if (p.scope === 'NAMESPACE') {
        const list = this.byNamespace.get(p.namespace) ?? [];
        list.push(c);
        this.byNamespace.set(p.namespace, list);
      }
    }
    // Sorted so the reported deciding policy does not depend on snapshot order.
    this.global.sort(byKey);
    for (const l of this.byNamespace.values()) l.sort(byKey);
  }

  private applicable(dst: Workload): Applicable {
    const cacheKey = `${dst.namespace}\0${dst.authorizationPolicies.join('\0')}`;
    const hit = this.cache.get(cacheKey);
    if (hit) return hit;
    const seen = new Set<string>();
    const res: Applicable = { deny: [], allow: [], audit: [], missing: [] };
    const add = (c: CompiledPolicy) => {
      if (seen.has(c.key)) return;
      seen.add(c.key);
      (c.policy.action === 'DENY' ? res.deny : c.policy.action === 'ALLOW' ? res.allow : res.audit).push(c);
    };
    this.global.forEach(add);
    this.byNamespace.get(dst.namespace)?.forEach(add);
    for (const k of dst.authorizationPolicies) {
      const c = this.all.get(k);
      if (c) add(c);
      else res.missing.push(k);
    }
    this.cache.set(cacheKey, res);
    return res;
  }

  evaluate(conn: RbacConnection, dst: Workload): RbacDecision {
    const app = this.applicable(dst);
    const id = conn.srcIdentity;
    const facts: ConnFacts = {
      principal: id ? istioPrincipal(id) : undefined,
      namespace: id?.namespace,
      srcIp: normalIp(conn.srcIp),
      dstIp: normalIp(conn.dstIp),
      dstPort: conn.dstPort,
    };
    const audit = app.audit.filter((p) => p.matches(facts)).map((p) => p.key);
    if (app.missing.length) return { allowed: false, policy: `missing policy: ${app.missing.join(', ')}`, audit };
    const deny = app.deny.find((p) => p.matches(facts));
    if (deny) return { allowed: false, policy: deny.key, audit };
    if (!app.allow.length) return { allowed: true, audit };
    const allow = app.allow.find((p) => p.matches(facts));
    if (allow) return { allowed: true, policy: allow.key, audit };
    return { allowed: false, policy: `no ALLOW policy matched: ${app.allow.map((p) => p.key).join(', ')}`, audit };
  }
}
