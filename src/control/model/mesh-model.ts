// The mesh model from the configuration objects: workloads, services and the L4 policies agents
// enforce, plus every problem found.
//
// A builder keeps what it built last time and reuses it where the inputs are the same objects
// (sources hand back the same object for an unchanged resource): a pod's Workload depends only on
// the pod and its namespace's context (its Services, the selector policies and
// PeerAuthentications of its namespace and the root namespace), so one pod change rebuilds one
// Workload, and a Service change rebuilds its namespace. Reused Workloads are the same objects, so
// their encodings are reused too. `buildMeshModel` is the one-shot form; both give the same model.
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { KObject, Pod, Service as KService } from '../../lab/objects.ts';
import { translateAuthorizationPolicy } from './authorization.ts';
import { effectivePeerAuthn, translatePeerAuthentication, type PeerAuthn } from './peer-authentication.ts';
import { buildService, buildWorkload, isPod, isService, type MeshOptions, type SelectorPolicy } from './workloads.ts';

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

/** One security object, translated: what it contributes and what is wrong with it. */
interface Translated {
  policy?: AuthorizationPolicy;
  selectorPolicy?: SelectorPolicy;
  peerAuthn?: PeerAuthn;
  problems: ModelProblem[];
}

/** Everything besides the pod itself that a pod's Workload depends on. */
interface NsContext {
  services: KService[];
  selectorPolicies: SelectorPolicy[];
  peerAuthns: PeerAuthn[];
}

/** One namespace's pods and what they produced; reused whole while the pods and context are the same. */
interface NsPods {
  pods: Pod[];
  ctx: NsContext;
  entries: Map<Pod, PodEntry>;
  workloads: Workload[];
  paPolicies: AuthorizationPolicy[];
  /** node -> service accounts of this namespace it may obtain */
  identities: Map<string, Set<string>>;
}

interface PodEntry {
  ctx: NsContext;
  /** [node, service account] when the pod's node may obtain its identity. */
  identity?: [string, string];
  workload?: Workload;
  /** The PeerAuthentication-derived DENY policy, if any. */
  paPolicy?: AuthorizationPolicy;
}

const sameList = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export class MeshModelBuilder {
  private readonly translated = new WeakMap<KObject, Translated>();
  private readonly services = new WeakMap<KService, Service | undefined>();
  private contexts = new Map<string, NsContext>();
  private namespaces = new Map<string, NsPods>();

  constructor(private readonly o: MeshOptions) {}

  build(objects: readonly KObject[]): MeshModel {
    const o = this.o;
    const problems: ModelProblem[] = [];
    const policies = new Map<string, AuthorizationPolicy>();
    const selectorPolicies: SelectorPolicy[] = [];
    const peerAuthns: PeerAuthn[] = [];
    const kServices: KService[] = [];
    const servicesByNs = new Map<string, KService[]>();
    const podsByNs = new Map<string, Pod[]>();
    for (const obj of objects) {
      if (isPod(obj)) {
        const ns = obj.metadata.namespace ?? 'default';
        const list = podsByNs.get(ns);
        if (list) list.push(obj);
        else podsByNs.set(ns, [obj]);
      } else if (isService(obj)) {
        kServices.push(obj);
        const ns = obj.metadata.namespace ?? 'default';
        const list = servicesByNs.get(ns);
        if (list) list.push(obj);
        else servicesByNs.set(ns, [obj]);
      } else if (AUTHZ_KINDS.has(obj.kind)) {
        const t = this.translate(obj);
        problems.push(...t.problems);
        if (t.policy) policies.set(policyKey(t.policy), t.policy);
        if (t.selectorPolicy) selectorPolicies.push(t.selectorPolicy);
        if (t.peerAuthn) peerAuthns.push(t.peerAuthn);
      }
    }

    // Per namespace, the context its pods see; the previous one is kept when nothing in it changed.
    const contexts = new Map<string, NsContext>();
    const contextOf = (ns: string): NsContext => {
      let ctx = contexts.get(ns);
      if (ctx) return ctx;
      const inScope = (p: { namespace: string }) => p.namespace === ns || p.namespace === o.rootNamespace;
      const next: NsContext = { services: servicesByNs.get(ns) ?? [], selectorPolicies: selectorPolicies.filter(inScope), peerAuthns: peerAuthns.filter(inScope) };
      const prev = this.contexts.get(ns);
      ctx = prev && sameList(prev.services, next.services) && sameList(prev.selectorPolicies, next.selectorPolicies) && sameList(prev.peerAuthns, next.peerAuthns) ? prev : next;
      contexts.set(ns, ctx);
      return ctx;
    };

    const namespaces = new Map<string, NsPods>();
    const workloads: Workload[] = [];
    for (const [ns, pods] of podsByNs) {
      const ctx = contextOf(ns);
      const prev = this.namespaces.get(ns);
      const out = prev && prev.ctx === ctx && sameList(prev.pods, pods) ? prev : this.buildNamespace(ns, pods, ctx, prev);
      namespaces.set(ns, out);
      for (const w of out.workloads) workloads.push(w);
      for (const p of out.paPolicies) policies.set(policyKey(p), p);
    }
    this.namespaces = namespaces;
    this.contexts = contexts;

    const services: Service[] = [];
    for (const s of kServices) {
      let svc = this.services.get(s);
      if (!this.services.has(s)) this.services.set(s, (svc = buildService(s, o)));
      if (svc) services.push(svc);
    }
    return {
      workloads,
      services,
      policies: [...policies.values()],
      problems,
      canIssue: (node, id) => id.trustDomain === o.trustDomain && !!namespaces.get(id.namespace)?.identities.get(node)?.has(id.serviceAccount),
    };
  }

  /** A namespace whose pods or context changed; pods that are the same objects under the same context are reused. */
  private buildNamespace(ns: string, pods: Pod[], ctx: NsContext, prev: NsPods | undefined): NsPods {
    const out: NsPods = { pods, ctx, entries: new Map(), workloads: [], paPolicies: [], identities: new Map() };
    for (const pod of pods) {
      let e = prev?.entries.get(pod);
      if (!e || e.ctx !== ctx) e = this.buildPod(pod, ns, ctx);
      out.entries.set(pod, e);
      if (e.workload) out.workloads.push(e.workload);
      if (e.paPolicy) out.paPolicies.push(e.paPolicy);
      if (e.identity) {
        const [node, sa] = e.identity;
        const set = out.identities.get(node);
        if (set) set.add(sa);
        else out.identities.set(node, new Set([sa]));
      }
    }
    return out;
  }

  private buildPod(pod: Pod, ns: string, ctx: NsContext): PodEntry {
    const identity = podIdentity(pod);
    const w = buildWorkload(pod, ctx.services, ctx.selectorPolicies, this.o);
    if (!w) return { ctx, identity };
    // PeerAuthentication resolves per workload into at most one DENY policy it names.
    const pa = effectivePeerAuthn({ namespace: ns, labels: pod.metadata.labels ?? {} }, ctx.peerAuthns, this.o.rootNamespace);
    if (pa.policy) w.authorizationPolicies = [...w.authorizationPolicies, policyKey(pa.policy)].sort();
    return { ctx, identity, workload: w, paPolicy: pa.policy };
  }

  private translate(obj: KObject): Translated {
    const hit = this.translated.get(obj);
    if (hit) return hit;
    const t: Translated = { problems: [] };
    const problem = (field: string, reason: string) => t.problems.push({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field, reason });
    const opts = { rootNamespace: this.o.rootNamespace, trustDomain: this.o.trustDomain };
    if (!SECURITY_GROUP.test(obj.apiVersion)) problem('apiVersion', `unsupported version ${obj.apiVersion} (security.istio.io/v1 or v1beta1)`);
    else if (obj.kind === 'AuthorizationPolicy') {
      const r = translateAuthorizationPolicy(obj, opts);
      for (const p of r.problems) problem(p.field, p.reason);
      if (r.policy) {
        t.policy = r.policy;
        if (r.policy.scope === 'WORKLOAD_SELECTOR' && r.selector) t.selectorPolicy = { key: policyKey(r.policy), namespace: r.policy.namespace, selector: r.selector };
      }
    } else {
      const r = translatePeerAuthentication(obj, opts);
      for (const p of r.problems) problem(p.field, p.reason);
      t.peerAuthn = r.peerAuthn;
    }
    this.translated.set(obj, t);
    return t;
  }
}

export function buildMeshModel(objects: readonly KObject[], o: MeshOptions): MeshModel {
  return new MeshModelBuilder(o).build(objects);
}

/** A node may obtain the identities of pods scheduled there (running or starting). */
function podIdentity(pod: Pod): [string, string] | undefined {
  const node = pod.spec.nodeName;
  if (!node || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return undefined;
  return [node, pod.spec.serviceAccountName ?? 'default'];
}
