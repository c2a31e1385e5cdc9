// The mesh model from the configuration objects: workloads, services and the L4 policies agents
// enforce, plus every problem found. It composes networking/workloads.ts with the security/
// translators (AuthorizationPolicy, PeerAuthentication); the L7 traffic model of routes and
// clusters is built beside it (networking/traffic-model.ts).
//
// A builder keeps what it built last time and reuses it where the inputs are the same: snapshots
// keep a namespace's list of each kind as the same array while none of its objects changed, and an
// unchanged object as the same object. A pod's Workload depends only on the pod and its
// namespace's context (its Services, the selector policies and PeerAuthentications of its
// namespace and the root namespace, its Namespace object's use-waypoint labels and the index of
// the mesh's waypoints), so one pod change rebuilds one Workload, and the work of a
// build is the number of namespaces plus what changed. The model is kept per namespace, and a
// namespace nothing changed in is the same object, which is how the publisher finds what to send.
// `buildMeshModel` is the one-shot form; both give the same model.
import { isDeepStrictEqual } from 'node:util';
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import type { SpiffeId } from '../../api/spiffe.ts';
import { matchesSelector, type KObject, type Pod, type Service as KService } from '../../kube/objects.ts';
import { ConfigSnapshot, ofKind } from '../config/config-store.ts';
import { translateAuthorizationPolicy } from './security/authorization.ts';
import { readTargetRefs, type TargetRef } from './security/attachments.ts';
import { effectivePeerAuthn, translatePeerAuthentication, type PeerAuthn } from './security/peer-authentication.ts';
import { buildService, buildWorkload, type MeshOptions, type SelectorPolicy } from './networking/workloads.ts';
import {
  buildWaypointIndex,
  chooseWaypoint,
  EMPTY_WAYPOINTS,
  isWaypointPod,
  isWaypointService,
  namespaceProblem,
  parseWaypointGateway,
  sameIndex,
  type ParsedGateway,
  type WaypointChoice,
  type WaypointIndex,
} from './networking/waypoints.ts';

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
  /** Whether a waypoint of the mesh runs as this service account (its pods may read the workload API). */
  isWaypointIdentity(namespace: string, serviceAccount: string): boolean;
}

const SECURITY_GROUP = /^security\.istio\.io\/v1(beta1)?$/;

/** One security object, translated: what it contributes and what is wrong with it. */
interface Translated {
  policy?: AuthorizationPolicy;
  /** A targetRefs policy: the agents enforce it only on targets no waypoint serves. */
  targeted?: TargetedPolicy;
  selectorPolicy?: SelectorPolicy;
  peerAuthn?: PeerAuthn;
  problems: ModelProblem[];
}

/** A targetRefs AuthorizationPolicy as the agents would enforce it, with its L4 translation's problems. */
interface TargetedPolicy {
  policy: AuthorizationPolicy;
  refs: TargetRef[];
  problems: ModelProblem[];
}

/** A namespace's security objects, translated; reused while both lists are the same arrays. */
interface NsSecurity {
  aps: readonly KObject[];
  pas: readonly KObject[];
  policies: AuthorizationPolicy[];
  targeted: TargetedPolicy[];
  selectorPolicies: SelectorPolicy[];
  peerAuthns: PeerAuthn[];
  problems: ModelProblem[];
}

/** Everything besides the pod itself that a pod's Workload depends on. */
interface NsContext {
  services: readonly KService[];
  /** The Namespace object (its use-waypoint labels), if known. */
  nsObj?: KObject;
  /** Every Gateway of the mesh (a label may name another namespace's waypoint). */
  waypoints: WaypointIndex;
  serviceEntries: readonly KObject[];
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
  /** Selector policies standing for targetRefs policies whose Service or ServiceEntry no waypoint serves. */
  unbound: SelectorPolicy[];
  entries: Map<Pod, PodEntry>;
  paPolicies: AuthorizationPolicy[];
  /** node -> service accounts of this namespace it may obtain */
  identities: Map<string, Set<string>>;
  model: NsModel;
}

interface PodEntry {
  ctx: NsContext;
  unbound: SelectorPolicy[];
  problems: ModelProblem[];
  /** [node, service account] when the pod's node may obtain its identity. */
  identity?: [string, string];
  workload?: Workload;
  /** The PeerAuthentication-derived DENY policy, if any. */
  paPolicy?: AuthorizationPolicy;
}

/** One Service as built: reused under the same context (and the same pods, if its waypoint depended on them). */
interface SvcEntry {
  ctx: NsContext;
  pods?: readonly Pod[];
  service?: Service;
  problems: ModelProblem[];
}

export class MeshModelBuilder {
  private readonly translated = new WeakMap<KObject, Translated>();
  private readonly services = new WeakMap<KService, SvcEntry>();
  private readonly gateways = new WeakMap<KObject, ParsedGateway>();
  /** The lists the waypoint index was built from: each namespace's Gateways and, where there are some, Services. */
  private waypointInputs: (readonly KObject[])[] = [];
  private waypoints: WaypointIndex = EMPTY_WAYPOINTS;
  private nsObjects: { list: readonly KObject[]; byName: Map<string, KObject> } = { list: [], byName: new Map() };
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
    const waypoints = this.waypointIndex(snap);
    const nsList = ofKind(snap.namespaces.get(''), 'Namespace');
    if (nsList !== this.nsObjects.list) this.nsObjects = { list: nsList, byName: new Map(nsList.map((n) => [n.metadata.name, n])) };

    const built = new Map<string, NsBuilt>();
    const namespaces = new Map<string, NsModel>();
    for (const [ns, g] of snap.namespaces) {
      if (ns === '') continue; // cluster-scoped objects
      const prev = this.built.get(ns);
      const services = ofKind<KService>(g, 'Service');
      const own = security.get(ns);
      const nsObj = this.nsObjects.byName.get(ns);
      const serviceEntries = ofKind(g, 'ServiceEntry');
      const ctx: NsContext =
        prev && prev.ctx.services === services && prev.ctx.own === own && prev.ctx.root === root && prev.ctx.nsObj === nsObj && prev.ctx.waypoints === waypoints && prev.ctx.serviceEntries === serviceEntries
          ? prev.ctx
          : { services, nsObj, waypoints, serviceEntries, own, root, selectorPolicies: [...(own?.selectorPolicies ?? []), ...(ns !== o.rootNamespace ? root?.selectorPolicies ?? [] : [])], peerAuthns: [...(own?.peerAuthns ?? []), ...(ns !== o.rootNamespace ? root?.peerAuthns ?? [] : [])] };
      const pods = ofKind<Pod>(g, 'Pod');
      const out = prev && prev.ctx === ctx && prev.pods === pods ? prev : this.buildNamespace(ns, pods, ctx, prev);
      built.set(ns, out);
      namespaces.set(ns, out.model);
    }
    this.security = security;
    this.built = built;
    return meshModel(namespaces, (node, id) => id.trustDomain === o.trustDomain && !!built.get(id.namespace)?.identities.get(node)?.has(id.serviceAccount), waypoints);
  }

  /** A namespace whose pods, Services or context changed; pods that are the same objects under the same context are reused. */
  private buildNamespace(ns: string, pods: readonly Pod[], ctx: NsContext, prev: NsBuilt | undefined): NsBuilt {
    // Services first: whether a targeted Service has a waypoint decides which workloads list its policy.
    const svcEntries = ctx.services.map((s) => {
      let e = this.services.get(s);
      if (!e || e.ctx !== ctx || (e.pods && e.pods !== pods)) {
        const next = this.buildSvc(s, ns, ctx, pods);
        // The same Service as before stays the same object: its encoding is reused.
        if (e?.service && next.service && isDeepStrictEqual(e.service, next.service)) next.service = e.service;
        this.services.set(s, (e = next));
      }
      return e;
    });
    const targets = unboundTargets(ns, ctx, new Map(ctx.services.map((s, i) => [s.metadata.name, svcEntries[i]!])));
    const unbound = prev && isDeepStrictEqual(prev.unbound, targets.selectors) ? prev.unbound : targets.selectors;
    const out: NsBuilt = { pods, ctx, unbound, entries: new Map(), paPolicies: [], identities: new Map(), model: undefined! };
    const workloads: Workload[] = [];
    const problems: ModelProblem[] = [...(ctx.own?.problems ?? []), ...(ctx.waypoints.problems.get(ns) ?? []), ...targets.problems];
    const nsp = namespaceProblem(ns, ctx.nsObj?.metadata.labels, ctx.waypoints);
    if (nsp && ctx.nsObj) problems.push({ kind: 'Namespace', namespace: '', name: ns, ...nsp });
    const paPolicies = new Map<string, AuthorizationPolicy>();
    for (const pod of pods) {
      let e = prev?.entries.get(pod);
      if (!e || e.ctx !== ctx || e.unbound !== unbound) e = this.buildPod(pod, ns, ctx, unbound);
      out.entries.set(pod, e);
      problems.push(...e.problems);
      if (e.workload) workloads.push(e.workload);
      if (e.paPolicy) paPolicies.set(policyKey(e.paPolicy), e.paPolicy);
      if (e.identity) {
        const [node, sa] = e.identity;
        const set = out.identities.get(node);
        if (set) set.add(sa);
        else out.identities.set(node, new Set([sa]));
      }
    }
    const services: Service[] = [];
    for (const e of svcEntries) {
      if (e.service) services.push(e.service);
      problems.push(...e.problems);
    }
    for (const se of ctx.serviceEntries) problems.push(...serviceEntryWaypoint(se, ns, ctx));
    out.model = { workloads, services, policies: [...(ctx.own?.policies ?? []), ...targets.policies, ...paPolicies.values()], problems };
    return out;
  }

  /** A Service and its waypoint; a for-service-account waypoint makes it depend on the pods it selects. */
  private buildSvc(s: KService, ns: string, ctx: NsContext, pods: readonly Pod[]): SvcEntry {
    const service = buildService(s, this.o);
    const e: SvcEntry = { ctx, service, problems: [] };
    if (!service || isWaypointService(s, ctx.waypoints)) return e;
    const choice = chooseWaypoint(
      {
        kind: 'service',
        namespace: ns,
        labels: s.metadata.labels,
        nsLabels: ctx.nsObj?.metadata.labels,
        backingAccounts: () => {
          e.pods = pods;
          return pods.filter((p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed' && matchesSelector(p.metadata.labels, s.spec.selector)).map((p) => p.spec.serviceAccountName ?? 'default');
        },
      },
      ctx.waypoints,
    );
    if (choice.waypoint) service.waypoint = choice.waypoint;
    e.problems = ownProblem(choice, s);
    return e;
  }

  private buildPod(pod: Pod, ns: string, ctx: NsContext, unbound: SelectorPolicy[]): PodEntry {
    const identity = podIdentity(pod);
    const w = buildWorkload(pod, ctx.services, unbound.length ? [...ctx.selectorPolicies, ...unbound] : ctx.selectorPolicies, this.o);
    if (!w) return { ctx, unbound, identity, problems: [] };
    const choice: WaypointChoice = isWaypointPod(pod, ctx.waypoints) ? {} : chooseWaypoint({ kind: 'workload', namespace: ns, labels: pod.metadata.labels, nsLabels: ctx.nsObj?.metadata.labels, serviceAccount: w.serviceAccount }, ctx.waypoints);
    if (choice.waypoint) w.waypoint = choice.waypoint;
    // PeerAuthentication resolves per workload into at most one DENY policy it names.
    const pa = effectivePeerAuthn({ namespace: ns, labels: pod.metadata.labels ?? {} }, ctx.peerAuthns, this.o.rootNamespace);
    if (pa.policy) w.authorizationPolicies = [...w.authorizationPolicies, policyKey(pa.policy)].sort();
    return { ctx, unbound, identity, workload: w, paPolicy: pa.policy, problems: ownProblem(choice, pod) };
  }

  /**
   * Every Gateway of the mesh, with the addresses of the waypoint ones. Rebuilt only when a
   * namespace's Gateways, or the Services of a namespace holding Gateways, changed; and kept as
   * the same object when it resolves alike, so namespaces it did not change are not rebuilt.
   */
  private waypointIndex(snap: ConfigSnapshot): WaypointIndex {
    const inputs: (readonly KObject[])[] = [];
    for (const g of snap.namespaces.values()) {
      const gws = ofKind(g, 'Gateway');
      if (gws.length) inputs.push(gws, ofKind(g, 'Service'));
    }
    if (inputs.length === this.waypointInputs.length && inputs.every((l, i) => l === this.waypointInputs[i])) return this.waypoints;
    this.waypointInputs = inputs;
    const parsed: [KObject, ParsedGateway][] = [];
    for (let i = 0; i < inputs.length; i += 2)
      for (const gw of inputs[i]!) {
        let p = this.gateways.get(gw);
        if (!p) this.gateways.set(gw, (p = parseWaypointGateway(gw)));
        parsed.push([gw, p]);
      }
    const next = buildWaypointIndex(parsed, (ns) => ofKind<KService>(snap.namespaces.get(ns), 'Service'));
    if (!sameIndex(this.waypoints, next)) this.waypoints = next;
    return this.waypoints;
  }

  private translateNs(aps: readonly KObject[], pas: readonly KObject[]): NsSecurity {
    const sec: NsSecurity = { aps, pas, policies: [], targeted: [], selectorPolicies: [], peerAuthns: [], problems: [] };
    for (const obj of [...aps, ...pas]) {
      const t = this.translate(obj);
      sec.problems.push(...t.problems);
      if (t.policy) sec.policies.push(t.policy);
      if (t.targeted) sec.targeted.push(t.targeted);
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
      if (r.targeted && r.policy) {
        // The waypoint's translation reports the policy; these matter only where agents enforce it.
        const at = (field: string, reason: string): ModelProblem => ({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field, reason: `where enforced by the agents: ${reason}` });
        t.targeted = { policy: r.policy, refs: readTargetRefs(obj, []), problems: r.problems.map((p) => at(p.field, p.reason)) };
        this.translated.set(obj, t);
        return t;
      }
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
function meshModel(namespaces: ReadonlyMap<string, NsModel>, canIssue: MeshModel['canIssue'], waypoints: WaypointIndex = EMPTY_WAYPOINTS): MeshModel {
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
    isWaypointIdentity: (namespace, serviceAccount) =>
      [...waypoints.entries.values()].some((e) => 'waypoint' in e && e.waypoint.namespace === namespace && e.waypoint.runsAs === serviceAccount),
  };
}

export function buildMeshModel(objects: readonly KObject[], o: MeshOptions): MeshModel {
  return new MeshModelBuilder(o).build(ConfigSnapshot.of(objects));
}

/** The problem a choice reports on the object whose own label made it (the Namespace's is reported once, per namespace). */
function ownProblem(c: WaypointChoice, o: KObject): ModelProblem[] {
  return c.problem?.on === 'self' ? [{ kind: o.kind, namespace: o.metadata.namespace ?? '', name: o.metadata.name, field: c.problem.field, reason: c.problem.reason }] : [];
}

/**
 * A ServiceEntry's use-waypoint: checked like a Service's, but weft does not yet publish
 * ServiceEntries in the workload API, so agents could not send its traffic anywhere but direct;
 * that is said rather than silently ignored.
 */
function serviceEntryWaypoint(se: KObject, ns: string, ctx: NsContext): ModelProblem[] {
  const own = se.metadata.labels?.['istio.io/use-waypoint'];
  if (own === undefined || own === 'none') return [];
  const choice = chooseWaypoint({ kind: 'service', namespace: ns, labels: se.metadata.labels, nsLabels: ctx.nsObj?.metadata.labels }, ctx.waypoints);
  if (choice.problem) return ownProblem(choice, se);
  return [{ kind: se.kind, namespace: ns, name: se.metadata.name, field: 'metadata.labels["istio.io/use-waypoint"]', reason: 'weft does not yet publish ServiceEntries to agents: traffic to this entry does not go through a waypoint' }];
}

/** A node may obtain the identities of pods scheduled there (running or starting). */
function podIdentity(pod: Pod): [string, string] | undefined {
  const node = pod.spec.nodeName;
  if (!node || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return undefined;
  return [node, pod.spec.serviceAccountName ?? 'default'];
}

/**
 * The targetRefs policies of a namespace whose Service or ServiceEntry no waypoint serves: as
 * Istio reports them ("not bound to a waypoint"), and enforced by the agents of that target's
 * workloads, fail closed (selector policies over the target's selector). weft's agents never send
 * a ServiceEntry's traffic through a waypoint, so a ServiceEntry target is always enforced there.
 * Gateway targets are the waypoint's own (a missing Gateway is reported with its listener).
 */
function unboundTargets(ns: string, ctx: NsContext, svcs: ReadonlyMap<string, SvcEntry>): { selectors: SelectorPolicy[]; policies: AuthorizationPolicy[]; problems: ModelProblem[] } {
  const out = { selectors: [] as SelectorPolicy[], policies: [] as AuthorizationPolicy[], problems: [] as ModelProblem[] };
  for (const t of ctx.own?.targeted ?? []) {
    const p = t.policy;
    const problem = (field: string, reason: string) => out.problems.push({ kind: 'AuthorizationPolicy', namespace: ns, name: p.name, field, reason });
    let enforced = false;
    for (const [i, ref] of t.refs.entries()) {
      const field = `spec.targetRefs[${i}]`;
      let selector: Record<string, string> | undefined;
      if (ref.kind === 'Service') {
        const k = ctx.services.find((s) => s.metadata.name === ref.name);
        if (!k) {
          problem(field, `Service ${ns}/${ref.name} was not found`);
          continue;
        }
        if (svcs.get(ref.name)?.service?.waypoint) continue;
        if (isWaypointService(k, ctx.waypoints)) {
          problem(field, `Service ${ns}/${ref.name} is a waypoint's own Service: target its Gateway to apply the policy to what the waypoint serves (not applied here)`);
          continue;
        }
        selector = k.spec.selector && Object.keys(k.spec.selector).length ? k.spec.selector : undefined;
        problem(field, `Service ${ns}/${ref.name} is not bound to a waypoint: ${selector ? "its workloads' agents enforce the policy, fail closed (HTTP attributes cannot be seen there)" : 'it selects no workloads, so nothing in the mesh enforces the policy for it'}`);
      } else if (ref.kind === 'ServiceEntry') {
        const se = ctx.serviceEntries.find((s) => s.metadata.name === ref.name);
        if (!se) {
          problem(field, `ServiceEntry ${ns}/${ref.name} was not found`);
          continue;
        }
        const ws = (se as { spec?: { workloadSelector?: { labels?: Record<string, string> } } }).spec?.workloadSelector?.labels;
        selector = ws;
        problem(field, `ServiceEntry ${ns}/${ref.name} is not bound to a waypoint (weft's agents do not send ServiceEntry traffic through one): ${ws ? "its workloads' agents enforce the policy, fail closed" : 'it selects no workloads here, so nothing in the mesh enforces the policy for it'}`);
      } else continue;
      if (!selector || !Object.keys(selector).length) continue;
      out.selectors.push({ key: policyKey(p), namespace: ns, selector });
      enforced = true;
    }
    if (enforced) {
      out.policies.push(p);
      out.problems.push(...t.problems);
    }
  }
  return out;
}
