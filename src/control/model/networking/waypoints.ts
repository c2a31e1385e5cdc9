// Waypoints, as Istio ambient defines them: a Gateway of class `istio-waypoint` with an HBONE
// listener on 15008, and the `istio.io/use-waypoint` labels that send a Namespace's, Service's or
// Pod's traffic through one. The Gateway itself is checked by the shared rule of kube/waypoint.ts;
// this file turns its verdict into the model's problems, indexes the waypoints with the address
// agents reach them at (the ClusterIP of the Service named after the Gateway), and decides, for one
// Service or Workload, which waypoint (if any) its traffic goes through and what is wrong if none.
// Pure functions of their inputs, so the model builder can reuse what did not change.
import type { GatewayAddress } from '../../../api/mesh.ts';
import type { KObject, Pod, Service as KService } from '../../../kube/objects.ts';
import {
  checkWaypoint,
  GATEWAY_NAME_LABEL,
  MANAGED_LABEL,
  MANAGED_VALUE,
  USE_WAYPOINT_LABEL,
  USE_WAYPOINT_NAMESPACE_LABEL,
  WAYPOINT_CLASS,
  WAYPOINT_FOR_LABEL,
  WAYPOINT_PORTS,
  type GatewayObject,
  type WaypointFor,
  type WaypointFrom,
} from '../../../kube/waypoint.ts';
import { DNS1123_LABEL, isObj, type NetworkingProblem } from './common.ts';
import { serviceAddresses } from './workloads.ts';
import { isDnsSubdomain } from '../../../kube/names.ts';

const labelField = (key: string) => `metadata.labels["${key}"]`;

/** A valid waypoint Gateway; `address` is unset until its Service has a ClusterIP. */
export interface Waypoint {
  namespace: string;
  name: string;
  for: WaypointFor;
  /** Set by `istio.io/for-service-account`: it serves only that account's workloads in its namespace. */
  serviceAccount?: string;
  /** Who may use it: its HBONE listener's allowedRoutes.namespaces (Gateway API default: Same). */
  from: WaypointFrom;
  address?: GatewayAddress;
  /** The service account its pods run as (the Gateway's name unless gateway.istio.io/service-account). */
  runsAs: string;
}

/** One Gateway, read: a waypoint, or why it is not one (problems only for waypoint Gateways). */
export interface ParsedGateway {
  waypoint?: Omit<Waypoint, 'address'>;
  /** Why it cannot be used as a waypoint. */
  notWaypoint?: string;
  problems: NetworkingProblem[];
}

/**
 * A Gateway as the model sees it, by the shared rule (checkWaypoint, which the Kubernetes
 * reconciler also uses for the Gateway's status): a refused Gateway is no waypoint and its problem
 * is reported; fields weft ignores are reported and the waypoint kept.
 */
export function parseWaypointGateway(gw: KObject): ParsedGateway {
  const spec = isObj(gw.spec) ? gw.spec : {};
  if (spec.gatewayClassName !== WAYPOINT_CLASS) return { notWaypoint: `its gatewayClassName is ${JSON.stringify(spec.gatewayClassName ?? '')}, not ${WAYPOINT_CLASS}`, problems: [] };
  const at = (field: string, reason: string): NetworkingProblem => ({ kind: gw.kind, namespace: gw.metadata.namespace ?? '', name: gw.metadata.name, field, reason });
  const checked = checkWaypoint({ ...gw, spec } as GatewayObject);
  if ('problem' in checked) return { notWaypoint: 'it is not a valid waypoint (see its problems)', problems: [at(checked.problem.field, checked.problem.message)] };
  const w = checked.waypoint;
  return {
    waypoint: { namespace: w.namespace, name: w.name, for: w.for, ...(w.forServiceAccount !== undefined ? { serviceAccount: w.forServiceAccount } : {}), from: w.from, runsAs: w.serviceAccount },
    problems: checked.ignored.map((n) => at(n.field, n.message)),
  };
}

/** What a waypoint name resolves to: a usable waypoint (maybe not ready), or why not. */
export type WaypointEntry = { waypoint: Waypoint } | { notWaypoint: string; waypointClass: boolean };

/** Every Gateway of the mesh by "namespace/name", and what is wrong with the waypoint ones. */
export interface WaypointIndex {
  readonly entries: ReadonlyMap<string, WaypointEntry>;
  /** Problems of waypoint Gateways, by the Gateway's namespace. */
  readonly problems: ReadonlyMap<string, readonly NetworkingProblem[]>;
}

export const EMPTY_WAYPOINTS: WaypointIndex = { entries: new Map(), problems: new Map() };

/**
 * A waypoint's address: the ClusterIP of its Service (named after the Gateway, in its namespace),
 * which istiod creates with the Deployment and only then reports in the Gateway's status. Until it
 * exists the waypoint is not ready, as in Istio, and nothing is sent to it.
 */
export function waypointAddress(name: string, services: readonly KService[]): GatewayAddress | undefined {
  const svc = services.find((s) => s.metadata.name === name);
  const vip = svc ? serviceAddresses(svc)[0] : undefined;
  return vip ? { address: vip, network: '', hboneMtlsPort: WAYPOINT_PORTS.mesh } : undefined;
}

/** The index over parsed Gateways; `services(ns)` gives a namespace's Services for the addresses. */
export function buildWaypointIndex(gateways: Iterable<[KObject, ParsedGateway]>, services: (ns: string) => readonly KService[]): WaypointIndex {
  const entries = new Map<string, WaypointEntry>();
  const problems = new Map<string, NetworkingProblem[]>();
  for (const [gw, p] of gateways) {
    const ns = gw.metadata.namespace ?? 'default';
    const key = `${ns}/${gw.metadata.name}`;
    if (p.problems.length) problems.set(ns, [...(problems.get(ns) ?? []), ...p.problems]);
    if (!p.waypoint) {
      entries.set(key, { notWaypoint: p.notWaypoint!, waypointClass: isObj(gw.spec) && gw.spec.gatewayClassName === WAYPOINT_CLASS });
      continue;
    }
    const address = waypointAddress(gw.metadata.name, services(ns));
    entries.set(key, { waypoint: address ? { ...p.waypoint, address } : { ...p.waypoint } });
  }
  return { entries, problems };
}

/** Two indexes that resolve everything alike (so the model can keep the older one). */
export function sameIndex(a: WaypointIndex, b: WaypointIndex): boolean {
  const flat = (x: WaypointIndex) => JSON.stringify([[...x.entries].sort(([k1], [k2]) => (k1 < k2 ? -1 : 1)), [...x.problems].sort(([k1], [k2]) => (k1 < k2 ? -1 : 1))]);
  return a === b || flat(a) === flat(b);
}

/** What an object's own labels ask for. */
export type UseWaypoint = { none: true } | { key: string; field: string } | { invalid: string; field: string };

/** Reads `istio.io/use-waypoint` (and `-namespace`) on an object in namespace `ns`; undefined when unlabelled. */
export function useWaypointOf(labels: Record<string, string> | undefined, ns: string): UseWaypoint | undefined {
  const name = labels?.[USE_WAYPOINT_LABEL];
  if (name === undefined) return undefined;
  const field = labelField(USE_WAYPOINT_LABEL);
  // Istio reserves "none": it opts out of an inherited waypoint (a Gateway named none cannot be used).
  if (name === 'none') return { none: true };
  if (!isDnsSubdomain(name)) return { invalid: `${JSON.stringify(name)} is not a valid Gateway name`, field };
  const wns = labels?.[USE_WAYPOINT_NAMESPACE_LABEL] ?? ns;
  if (!DNS1123_LABEL.test(wns) || wns.length > 63) return { invalid: `${JSON.stringify(wns)} is not a valid namespace name`, field: labelField(USE_WAYPOINT_NAMESPACE_LABEL) };
  return { key: `${wns}/${name}`, field };
}

/** Whether a waypoint accepts users from a namespace (with its labels). */
function admits(w: Waypoint, ns: string, nsLabels: Record<string, string> | undefined): boolean {
  if ('all' in w.from) return true;
  if ('same' in w.from) return w.namespace === ns;
  return Object.entries(w.from.matchLabels).every(([k, v]) => nsLabels?.[k] === v);
}

/** Where traffic goes, and if the labels ask for something that cannot be, why. */
export interface WaypointChoice {
  waypoint?: GatewayAddress;
  /** On the object whose label chose (the target itself, or its Namespace). */
  problem?: { on: 'self' | 'namespace'; field: string; reason: string };
}

export interface WaypointTarget {
  kind: 'service' | 'workload';
  namespace: string;
  labels: Record<string, string> | undefined;
  /** The Namespace object's labels (its use-waypoint and, for Selector listeners, its identity). */
  nsLabels: Record<string, string> | undefined;
  /** A workload's service account. */
  serviceAccount?: string;
  /** A service's backing pods' service accounts (asked only for a for-service-account waypoint). */
  backingAccounts?: () => string[];
}

/**
 * The waypoint for one Service or Workload, as istiod chooses it: the object's own label, else its
 * Namespace's (`none` on the object opts out of the Namespace's); the Gateway must exist, be a
 * valid waypoint, be ready (have an address) and admit the namespace; and its `waypoint-for` must
 * cover the kind. A for-service-account waypoint serves only workloads of that account, and a
 * Service only when every pod it selects runs as that account. Anything else: no waypoint, and a
 * problem naming the label that asked (the Namespace's is reported by `namespaceProblem`).
 */
export function chooseWaypoint(t: WaypointTarget, index: WaypointIndex): WaypointChoice {
  const own = useWaypointOf(t.labels, t.namespace);
  if (own && 'none' in own) return {};
  if (own && 'invalid' in own) return { problem: { on: 'self', field: own.field, reason: own.invalid } };
  const use = own ?? useWaypointOf(t.nsLabels, t.namespace);
  if (!use || !('key' in use)) return {};
  const on = own ? 'self' : 'namespace';
  const r = resolve(use.key, t.namespace, t.nsLabels, index);
  if ('reason' in r) return { problem: { on, field: use.field, reason: r.reason } };
  const w = r.waypoint;
  const mismatch = (reason: string): WaypointChoice => (on === 'self' ? { problem: { on, field: use.field, reason } } : {});
  const covers = w.for === 'all' || w.for === t.kind;
  if (!covers) return mismatch(`waypoint ${use.key} does not take ${t.kind} traffic (${WAYPOINT_FOR_LABEL}: ${w.for})`);
  if (w.serviceAccount !== undefined) {
    if (w.namespace !== t.namespace) return mismatch(`waypoint ${use.key} serves only service account ${w.serviceAccount} of namespace ${w.namespace}`);
    if (t.kind === 'workload' && t.serviceAccount !== w.serviceAccount) return mismatch(`waypoint ${use.key} serves only service account ${w.serviceAccount}, not ${t.serviceAccount}`);
    if (t.kind === 'service') {
      const sas = t.backingAccounts?.() ?? [];
      if (!sas.length || sas.some((sa) => sa !== w.serviceAccount)) return mismatch(`waypoint ${use.key} serves only service account ${w.serviceAccount}, and this Service selects ${sas.length ? `pods of ${[...new Set(sas)].sort().join(', ')}` : 'no pods'}`);
    }
  }
  return { waypoint: w.address };
}

/** What is wrong with a Namespace's use-waypoint label, once for the namespace (undefined: nothing). */
export function namespaceProblem(ns: string, nsLabels: Record<string, string> | undefined, index: WaypointIndex): { field: string; reason: string } | undefined {
  const use = useWaypointOf(nsLabels, ns);
  if (!use || 'none' in use) return undefined;
  if ('invalid' in use) return { field: use.field, reason: use.invalid };
  const r = resolve(use.key, ns, nsLabels, index);
  return 'reason' in r ? { field: use.field, reason: r.reason } : undefined;
}

function resolve(key: string, ns: string, nsLabels: Record<string, string> | undefined, index: WaypointIndex): { waypoint: Waypoint & { address: GatewayAddress } } | { reason: string } {
  const e = index.entries.get(key);
  if (!e) return { reason: `waypoint ${key} does not exist: its traffic is not sent to a waypoint` };
  if ('notWaypoint' in e) return { reason: `Gateway ${key} is not a waypoint: ${e.notWaypoint}` };
  const w = e.waypoint;
  if (!w.address) return { reason: `waypoint ${key} is not ready (no Service ${key} with a ClusterIP yet): its traffic is not sent to a waypoint until it is` };
  if (!admits(w, ns, nsLabels)) return { reason: `waypoint ${key} does not admit namespace ${ns} (its HBONE listener's allowedRoutes.namespaces)` };
  return { waypoint: w as Waypoint & { address: GatewayAddress } };
}

/** A waypoint's own pods (of any Gateway of the waypoint class, valid or not) never go through a waypoint: that would loop. */
export function isWaypointPod(pod: Pod, index: WaypointIndex): boolean {
  const gw = pod.metadata.labels?.[GATEWAY_NAME_LABEL];
  if (gw === undefined) return false;
  const e = index.entries.get(`${pod.metadata.namespace ?? 'default'}/${gw}`);
  return !!e && ('waypoint' in e || e.waypointClass);
}

/** Nor does a waypoint's own Service (named after the Gateway, or labelled by istiod). */
export function isWaypointService(s: KService, index: WaypointIndex): boolean {
  if (s.metadata.labels?.[MANAGED_LABEL] === MANAGED_VALUE) return true;
  const e = index.entries.get(`${s.metadata.namespace ?? 'default'}/${s.metadata.name}`);
  return !!e && ('waypoint' in e || e.waypointClass);
}
