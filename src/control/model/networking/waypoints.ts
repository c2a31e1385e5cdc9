// Waypoints, as Istio ambient defines them: a Gateway of class `istio-waypoint` with an HBONE
// listener on 15008, and the `istio.io/use-waypoint` labels that send a Namespace's, Service's or
// Pod's traffic through one. This file validates the Gateways, indexes them with the address
// agents reach them at (the ClusterIP of the Service named after the Gateway), and decides, for one
// Service or Workload, which waypoint (if any) its traffic goes through and what is wrong if none.
// Pure functions of their inputs, so the model builder can reuse what did not change.
import type { GatewayAddress } from '../../../api/mesh.ts';
import type { KObject, Pod, Service as KService } from '../../../kube/objects.ts';
import { Checker, DNS1123_LABEL, isObj, type NetworkingProblem } from './common.ts';
import { serviceAddresses } from './workloads.ts';

/** The service account a waypoint's pods run as, when not the Gateway's name (istiod's annotation). */
const SERVICE_ACCOUNT_ANNOTATION = 'gateway.istio.io/service-account';

export const WAYPOINT_CLASS = 'istio-waypoint';
export const USE_WAYPOINT = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE = 'istio.io/use-waypoint-namespace';
export const WAYPOINT_FOR = 'istio.io/waypoint-for';
export const FOR_SERVICE_ACCOUNT = 'istio.io/for-service-account';
/** Set on the waypoint's own pods by its Deployment (Gateway API's convention, kept by istiod). */
export const GATEWAY_NAME = 'gateway.networking.k8s.io/gateway-name';
/** istiod labels the waypoint's own Service so: it never gets a waypoint. */
const MANAGED = 'gateway.istio.io/managed';
export const HBONE_PORT = 15008;

const GATEWAY_VERSION = /^gateway\.networking\.k8s\.io\/(v1|v1beta1)$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const WAYPOINT_FOR_VALUES = ['service', 'workload', 'all', 'none'] as const;
export type WaypointFor = (typeof WAYPOINT_FOR_VALUES)[number];

const labelField = (key: string) => `metadata.labels["${key}"]`;
const annotationField = (key: string) => `metadata.annotations["${key}"]`;

/** A valid waypoint Gateway; `address` is unset until its Service has a ClusterIP. */
export interface Waypoint {
  namespace: string;
  name: string;
  for: WaypointFor;
  /** Set by `istio.io/for-service-account`: it serves only that account's workloads in its namespace. */
  serviceAccount?: string;
  /** Who may use it: its HBONE listener's allowedRoutes.namespaces (Gateway API default: Same). */
  from: { same: true } | { all: true } | { matchLabels: Record<string, string> };
  address?: GatewayAddress;
  /** The service account its pods run as (the Gateway's name unless gateway.istio.io/service-account). */
  runsAs?: string;
}

/** One Gateway, read: a waypoint, or why it is not one (problems only for waypoint Gateways). */
export interface ParsedGateway {
  waypoint?: Omit<Waypoint, 'address'>;
  /** Why it cannot be used as a waypoint. */
  notWaypoint?: string;
  problems: NetworkingProblem[];
}

export function parseWaypointGateway(gw: KObject): ParsedGateway {
  const c = new Checker(gw);
  const spec = isObj(gw.spec) ? gw.spec : {};
  if (spec.gatewayClassName !== WAYPOINT_CLASS) return { notWaypoint: `its gatewayClassName is ${JSON.stringify(spec.gatewayClassName ?? '')}, not ${WAYPOINT_CLASS}`, problems: [] };
  if (!GATEWAY_VERSION.test(gw.apiVersion)) c.error('apiVersion', `unsupported version ${gw.apiVersion} (gateway.networking.k8s.io/v1 or v1beta1)`);
  let hbone: Record<string, unknown> | undefined;
  for (const [i, raw] of c.list(spec.listeners, 'spec.listeners').entries()) {
    const l = c.obj(raw, `spec.listeners[${i}]`);
    if (!l) continue;
    const isHbone = l.port === HBONE_PORT && l.protocol === 'HBONE';
    if (isHbone) hbone ??= l;
    else if (l.name === 'mesh') c.error(`spec.listeners[${i}]`, `the mesh listener of a waypoint must be port ${HBONE_PORT} protocol HBONE, got port ${JSON.stringify(l.port)} protocol ${JSON.stringify(l.protocol)}`);
  }
  if (!hbone) c.error('spec.listeners', `a waypoint (class ${WAYPOINT_CLASS}) needs a listener on port ${HBONE_PORT} with protocol HBONE (Istio names it mesh)`);
  const labels = gw.metadata.labels ?? {};
  const forValue = labels[WAYPOINT_FOR] ?? 'service';
  if (!(WAYPOINT_FOR_VALUES as readonly string[]).includes(forValue)) c.error(labelField(WAYPOINT_FOR), `unknown value ${JSON.stringify(forValue)} (service, workload, all or none)`);
  const sa = gw.metadata.annotations?.[FOR_SERVICE_ACCOUNT];
  if (sa !== undefined && (!DNS1123_SUBDOMAIN.test(sa) || sa.length > 253)) c.error(annotationField(FOR_SERVICE_ACCOUNT), `${JSON.stringify(sa)} is not a valid service account name`);
  const from = hbone ? allowedFrom(c, hbone) : { same: true as const };
  if (c.fatal) return { notWaypoint: 'it is not a valid waypoint (see its problems)', problems: c.problems };
  return {
    waypoint: { namespace: gw.metadata.namespace ?? 'default', name: gw.metadata.name, for: forValue as WaypointFor, ...(sa !== undefined ? { serviceAccount: sa } : {}), from },
    problems: c.problems,
  };
}

/** The HBONE listener's allowedRoutes.namespaces; what weft cannot evaluate allows only the waypoint's namespace. */
function allowedFrom(c: Checker, l: Record<string, unknown>): Waypoint['from'] {
  const ar = isObj(l.allowedRoutes) ? l.allowedRoutes : undefined;
  const ns = ar && isObj(ar.namespaces) ? ar.namespaces : undefined;
  const field = 'spec.listeners[mesh].allowedRoutes.namespaces';
  const from = ns?.from ?? 'Same';
  if (from === 'Same') return { same: true };
  if (from === 'All') return { all: true };
  if (from === 'Selector') {
    const sel = isObj(ns!.selector) ? ns!.selector : {};
    if (sel.matchExpressions !== undefined) {
      c.ignored(`${field}.selector.matchExpressions`, 'not supported by weft: only the waypoint\'s own namespace may use it');
      return { same: true };
    }
    const ml = c.labels(sel.matchLabels, `${field}.selector.matchLabels`) ?? {};
    return { matchLabels: ml };
  }
  return c.error(`${field}.from`, `unknown value ${JSON.stringify(from)} (Same, All or Selector)`) ?? { same: true };
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
  return vip ? { address: vip, network: '', hboneMtlsPort: HBONE_PORT } : undefined;
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
    const runsAs = gw.metadata.annotations?.[SERVICE_ACCOUNT_ANNOTATION] ?? gw.metadata.name;
    entries.set(key, { waypoint: address ? { ...p.waypoint, address, runsAs } : { ...p.waypoint, runsAs } });
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
  const name = labels?.[USE_WAYPOINT];
  if (name === undefined) return undefined;
  const field = labelField(USE_WAYPOINT);
  // Istio reserves "none": it opts out of an inherited waypoint (a Gateway named none cannot be used).
  if (name === 'none') return { none: true };
  if (!DNS1123_SUBDOMAIN.test(name) || name.length > 253) return { invalid: `${JSON.stringify(name)} is not a valid Gateway name`, field };
  const wns = labels?.[USE_WAYPOINT_NAMESPACE] ?? ns;
  if (!DNS1123_LABEL.test(wns) || wns.length > 63) return { invalid: `${JSON.stringify(wns)} is not a valid namespace name`, field: labelField(USE_WAYPOINT_NAMESPACE) };
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
  if (!covers) return mismatch(`waypoint ${use.key} does not take ${t.kind} traffic (${WAYPOINT_FOR}: ${w.for})`);
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
  const gw = pod.metadata.labels?.[GATEWAY_NAME];
  if (gw === undefined) return false;
  const e = index.entries.get(`${pod.metadata.namespace ?? 'default'}/${gw}`);
  return !!e && ('waypoint' in e || e.waypointClass);
}

/** Nor does a waypoint's own Service (named after the Gateway, or labelled by istiod). */
export function isWaypointService(s: KService, index: WaypointIndex): boolean {
  if (s.metadata.labels?.[MANAGED] === 'istio.io-mesh-controller') return true;
  const e = index.entries.get(`${s.metadata.namespace ?? 'default'}/${s.metadata.name}`);
  return !!e && ('waypoint' in e || e.waypointClass);
}
