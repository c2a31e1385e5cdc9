// The lab's waypoint controller, doing what the control plane's reconciler does on Kubernetes
// (src/control/gateway/waypoints.ts) with the same rendering (src/kube/waypoint.ts): each Gateway of
// class istio-waypoint becomes a ServiceAccount, Deployment and Service owned by it, which the
// lab's deployment controller and kubelet then run like any other; objects whose Gateway is gone
// are collected; the Gateway's status says whether it was accepted, whether a replica is ready and
// its Service's address. An object of the same name the Gateway does not own is never taken over.
// A Gateway's parametersRef is read from the store's ConfigMap: applying the ConfigMap reconciles.
import { randomUUID } from 'node:crypto';
import type { Deployment, KObject, Pod, Service } from '../../kube/objects.ts';
import {
  checkWaypoint,
  isWaypointGateway,
  parametersConfigMap,
  renderWaypoint,
  waypointParameters,
  waypointStatus,
  type GatewayObject,
  type RenderedObject,
  type WaypointRenderOptions,
  type WaypointOverlay,
  type WaypointProblem,
  type WaypointState,
  type Waypoint,
  type WaypointNote,
} from '../../kube/waypoint.ts';
import { keyOf } from '../../kube/objects.ts';
import { validateObject } from '../../kube/manifest.ts';
import { hashOf, type ObjectStore } from '../store.ts';

/** What the lab's waypoints are rendered with: the control plane's address and weft's own image. */
export type LabWaypointOptions = WaypointRenderOptions;

const ownedBy = (o: KObject, uid: string | undefined) => uid !== undefined && o.metadata.ownerReferences?.some((r) => r.kind === 'Gateway' && r.uid === uid) === true;
const comparable = (o: KObject) => {
  const { uid: _u, creationTimestamp: _c, ...metadata } = o.metadata;
  return { ...o, metadata, status: undefined };
};

/** The Gateway checked, with the overlay of its parametersRef's ConfigMap from the store (as the reconciler on Kubernetes). */
function checked(store: ObjectStore, gw: KObject): { waypoint: Waypoint; ignored: WaypointNote[]; overlay?: WaypointOverlay } | { problem: WaypointProblem } {
  const c = checkWaypoint(gw as unknown as GatewayObject);
  if ('problem' in c) return c;
  const ref = parametersConfigMap(c.waypoint);
  const params = waypointParameters(c.waypoint, ref === undefined ? undefined : (store.get(`ConfigMap/${c.waypoint.namespace}/${ref}`) as { data?: unknown } | undefined));
  if ('problem' in params) return params;
  if (params.overlay) {
    // What Kubernetes would run but the lab cannot (a secret volume, env from a ConfigMap key) is
    // said in the status rather than run without it.
    const v = validateObject(renderWaypoint(c.waypoint, { image: 'weft', controlAddress: '-', trustDomain: '-' }, params.overlay).deployment);
    if ('problem' in v) return { problem: { reason: 'InvalidParameters', field: 'spec.infrastructure.parametersRef', message: `ConfigMap ${c.waypoint.namespace}/${ref}: the lab cannot run the overlay: ${v.field}: ${v.problem}` } };
  }
  return { ...c, ...params };
}

/** Conflicts found in the last pass, by Gateway key, for its status. */
export type WaypointConflicts = Map<string, string>;

/** Moves the stored objects toward what every waypoint Gateway renders to. */
export function reconcileWaypoints(store: ObjectStore, o: LabWaypointOptions): WaypointConflicts {
  const conflicts: WaypointConflicts = new Map();
  const gateways = store.ofKind<KObject>('Gateway').filter(isWaypointGateway);
  const live = new Set(gateways.map((g) => g.metadata.uid));
  const KINDS = ['ServiceAccount', 'Deployment', 'Service'];
  // Garbage collection: what a Gateway owned, once the Gateway (or its uid) is gone.
  store.removeWhere((x) => KINDS.includes(x.kind) && x.metadata.ownerReferences?.some((r) => r.kind === 'Gateway' && !live.has(r.uid)) === true);
  for (const gw of gateways) {
    const c = checked(store, gw);
    // Not accepted: nothing new is rendered; what the last good version made stays.
    if ('problem' in c) continue;
    const rendered = renderWaypoint(c.waypoint, o, c.overlay);
    for (const r of [rendered.serviceAccount, rendered.service, rendered.deployment] as RenderedObject[]) {
      const want = r as unknown as KObject;
      const have = store.get(keyOf(want));
      if (have && !ownedBy(have, gw.metadata.uid)) {
        conflicts.set(keyOf(gw), `${r.kind} ${r.metadata.namespace}/${r.metadata.name} exists and is not owned by this Gateway`);
        continue;
      }
      if (have && hashOf(comparable(have)) === hashOf(comparable(want))) continue;
      store.put({ ...structuredClone(want), metadata: { ...structuredClone(want.metadata), uid: have?.metadata.uid ?? randomUUID(), creationTimestamp: have?.metadata.creationTimestamp ?? new Date().toISOString() } });
    }
  }
  return conflicts;
}

/**
 * Writes each waypoint Gateway's status into the store (only when it changed, so an unchanged lab
 * mirrors unchanged files): its readiness from the pods of its Deployment, its address from the
 * ClusterIP of its Service.
 */
export function updateWaypointStatus(
  store: ObjectStore,
  pods: readonly Pod[],
  clusterIPOf: (s: Service) => string | undefined,
  conflicts: WaypointConflicts,
): boolean {
  let changed = false;
  for (const gw of store.ofKind<KObject>('Gateway').filter(isWaypointGateway)) {
    const g = gw as unknown as GatewayObject;
    const c = checked(store, gw);
    let state: WaypointState;
    if ('problem' in c) state = { problem: c.problem };
    else {
      const ns = c.waypoint.namespace;
      const deployment = store.get(`Deployment/${ns}/${c.waypoint.name}`) as Deployment | undefined;
      const service = store.get(`Service/${ns}/${c.waypoint.name}`) as Service | undefined;
      const ready = deployment
        ? pods.filter((p) => p.metadata.ownerReferences?.[0]?.uid === deployment.metadata.uid && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).length
        : 0;
      const conflict = conflicts.get(keyOf(gw));
      state = { readyReplicas: ready, address: service && ownedBy(service, gw.metadata.uid) ? clusterIPOf(service) : undefined, ignored: c.ignored, ...(conflict && { conflict }) };
    }
    const status = waypointStatus(g, state);
    if (hashOf(status) === hashOf(g.status ?? {})) continue;
    store.put({ ...gw, status } as KObject);
    changed = true;
  }
  return changed;
}
