// The mesh model from the configuration objects: workloads, services and the L4 policies agents
// enforce, plus every problem found. It composes networking/workloads.ts with the security/
// translators (AuthorizationPolicy, PeerAuthentication); the L7 traffic model of routes and
// clusters is built beside it (networking/traffic-model.ts).
//
// A builder keeps what it built last time and reuses it where the inputs are the same: snapshots
// keep a namespace's list of each kind as the same array while none of its objects changed, and an
// unchanged object as the same object. A pod's Workload depends only on the pod and its
// namespace's context (its Services, the selector policies and PeerAuthentications of its
// namespace and the root namespace), so one pod change rebuilds one Workload, and the work of a
// build is the number of namespaces plus what changed. The model is kept per namespace, and a
// namespace nothing changed in is the same object, which is how the publisher finds what to send.
// `buildMeshModel` is the one-shot form; both give the same model.
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { KObject, Pod, Service as KService } from '../../kube/objects.ts';
import { ConfigSnapshot, ofKind } from '../config/config-store.ts';
import { translateAuthorizationPolicy } from './security/authorization.ts';
import { effectivePeerAuthn, translatePeerAuthentication, type PeerAuthn } from './security/peer-authentication.ts';
import { buildService, buildWorkload, type MeshOptions, type SelectorPolicy } from './networking/workloads.ts';

export interface ModelProblem {
  kind: string;
  namespace: string;
  name: string;
  field: string;
  reason: string;
}

/** What one namespace contributes; the same object while nothing it was built from changed. */
export interface NsModel {
  workloads: readonly Workload[];
  services: readonly Service[];
  /** Its AuthorizationPolicies, and the PeerAuthentication DENY policies its workloads name (keys may repeat across namespaces). */
  policies: readonly AuthorizationPolicy[];
  problems: readonly ModelProblem[];
}

export interface MeshModel {
  /** By namespace: consumers compare these by identity to find what changed. */
  namespaces: ReadonlyMap<string, NsModel>;
  /** Everything, flattened on first use. */
  readonly workloads: Workload[];
  readonly services: Service[];
  readonly policies: AuthorizationPolicy[];
  readonly problems: ModelProblem[];
  /** Node authorization for the CA: may this node obtain this identity? */
  canIssue(node: string, id: SpiffeId): boolean;
}

const SECURITY_GROUP = /^security\.istio\.io\/v1(beta1)?$/;

/** One security object, translated: what it contributes and what is wrong with it. */
interface Translated {
  policy?: AuthorizationPolicy;
  selectorPolicy?: SelectorPolicy;
  peerAuthn?: PeerAuthn;
  problems: ModelProblem[];
}

/** A namespace's security objects, translated; reused while both lists are the same arrays. */
interface NsSecurity {
  aps: readonly KObject[];
  pas: readonly KObject[];
  policies: AuthorizationPolicy[];
  selectorPolicies: SelectorPolicy[];
  peerAuthns: PeerAuthn[];
  problems: ModelProblem[];
}

/** Everything besides the pod itself that a pod's Workload depends on. */
interface NsContext {
  services: readonly KService[];
  own?: NsSecurity;
  root?: NsSecurity;
  /** The namespace's and the root namespace's */
  selectorPolicies: SelectorPolicy[];
  peerAuthns: PeerAuthn[];
}

/** One namespace as built: reused whole while its pods, Services and context are the same. */
interface NsBuilt {
  pods: readonly Pod[];
  ctx: NsContext;
  entries: Map<Pod, PodEntry>;
  paPolicies: AuthorizationPolicy[];
  /** node -> service accounts of this namespace it may obtain */
  identities: Map<string, Set<string>>;
  model: NsModel;
}

interface PodEntry {
  ctx: NsContext;
  /** [node, service account] when the pod's node may obtain its identity. */
  identity?: [string, string];
  workload?: Workload;
  /** The PeerAuthentication-derived DENY policy, if any. */
  paPolicy?: AuthorizationPolicy;
}

export class MeshModelBuilder {
  private readonly translated = new WeakMap<KObject, Translated>();
  private readonly services = new WeakMap<readonly KService[], Service[]>();
  private security = new Map<string, NsSecurity>();
  private built = new Map<string, NsBuilt>();

  constructor(private readonly o: MeshOptions) {}

  build(snap: ConfigSnapshot): MeshModel {
    const o = this.o;
    const security = new Map<string, NsSecurity>();
    for (const [ns, g] of snap.namespaces) {
      const aps = ofKind(g, 'AuthorizationPolicy');
      const pas = ofKind(g, 'PeerAuthentication');
      if (!aps.length && !pas.length) continue;
      const prev = this.security.get(ns);
      security.set(ns, prev && prev.aps === aps && prev.pas === pas ? prev : this.translateNs(aps, pas));
    }
    const root = security.get(o.rootNamespace);

    const built = new Map<string, NsBuilt>();
    const namespaces = new Map<string, NsModel>();
    for (const [ns, g] of snap.namespaces) {
      if (ns === '') continue; // cluster-scoped objects
      const prev = this.built.get(ns);
      const services = ofKind<KService>(g, 'Service');
      const own = security.get(ns);
      const ctx: NsContext =
        prev && prev.ctx.services === services && prev.ctx.own === own && prev.ctx.root === root
          ? prev.ctx
          : { services, own, root, selectorPolicies: [...(own?.selectorPolicies ?? []), ...(ns !== o.rootNamespace ? root?.selectorPolicies ?? [] : [])], peerAuthns: [...(own?.peerAuthns ?? []), ...(ns !== o.rootNamespace ? root?.peerAuthns ?? [] : [])] };
      const pods = ofKind<Pod>(g, 'Pod');
      const out = prev && prev.ctx === ctx && prev.pods === pods ? prev : this.buildNamespace(ns, pods, ctx, prev);
      built.set(ns, out);
      namespaces.set(ns, out.model);
    }
    this.security = security;
    this.built = built;
    return meshModel(namespaces, (node, id) => id.trustDomain === o.trustDomain && !!built.get(id.namespace)?.identities.get(node)?.has(id.serviceAccount));
  }

  /** A namespace whose pods, Services or context changed; pods that are the same objects under the same context are reused. */
  private buildNamespace(ns: string, pods: readonly Pod[], ctx: NsContext, prev: NsBuilt | undefined): NsBuilt {
    const out: NsBuilt = { pods, ctx, entries: new Map(), paPolicies: [], identities: new Map(), model: undefined! };
    const workloads: Workload[] = [];
    const paPolicies = new Map<string, AuthorizationPolicy>();
    for (const pod of pods) {
      let e = prev?.entries.get(pod);
      if (!e || e.ctx !== ctx) e = this.buildPod(pod, ns, ctx);
      out.entries.set(pod, e);
      if (e.workload) workloads.push(e.workload);
      if (e.paPolicy) paPolicies.set(policyKey(e.paPolicy), e.paPolicy);
      if (e.identity) {
        const [node, sa] = e.identity;
        const set = out.identities.get(node);
        if (set) set.add(sa);
        else out.identities.set(node, new Set([sa]));
      }
    }
    let services = this.services.get(ctx.services);
    if (!services) this.services.set(ctx.services, (services = ctx.services.map((s) => buildService(s, this.o)).filter((s): s is Service => !!s)));
    out.model = { workloads, services, policies: [...(ctx.own?.policies ?? []), ...paPolicies.values()], problems: ctx.own?.problems ?? [] };
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

  private translateNs(aps: readonly KObject[], pas: readonly KObject[]): NsSecurity {
    const sec: NsSecurity = { aps, pas, policies: [], selectorPolicies: [], peerAuthns: [], problems: [] };
    for (const obj of [...aps, ...pas]) {
      const t = this.translate(obj);
      sec.problems.push(...t.problems);
      if (t.policy) sec.policies.push(t.policy);
      if (t.selectorPolicy) sec.selectorPolicies.push(t.selectorPolicy);
      if (t.peerAuthn) sec.peerAuthns.push(t.peerAuthn);
    }
    return sec;
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

/** The model over its namespaces; the flat lists are built on first use (policies once per key). */
function meshModel(namespaces: ReadonlyMap<string, NsModel>, canIssue: MeshModel['canIssue']): MeshModel {
  const memo: Partial<Record<'workloads' | 'services' | 'policies' | 'problems', unknown[]>> = {};
  const flat = <T>(name: keyof typeof memo, pick: (m: NsModel) => readonly T[]): T[] => (memo[name] ??= [...namespaces.values()].flatMap(pick)) as T[];
  return {
    namespaces,
    get workloads() {
      return flat('workloads', (m) => m.workloads);
    },
    get services() {
      return flat('services', (m) => m.services);
    },
    get policies() {
      return (memo.policies ??= [...new Map([...namespaces.values()].flatMap((m) => m.policies.map((p) => [policyKey(p), p] as const))).values()]) as AuthorizationPolicy[];
    },
    get problems() {
      return flat('problems', (m) => m.problems);
    },
    canIssue,
  };
}

export function buildMeshModel(objects: readonly KObject[], o: MeshOptions): MeshModel {
  return new MeshModelBuilder(o).build(ConfigSnapshot.of(objects));
}

/** A node may obtain the identities of pods scheduled there (running or starting). */
function podIdentity(pod: Pod): [string, string] | undefined {
  const node = pod.spec.nodeName;
  if (!node || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return undefined;
  return [node, pod.spec.serviceAccountName ?? 'default'];
}
