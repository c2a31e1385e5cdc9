// Decide, then act: where a captured outbound connection goes, as a pure function of the mesh
// state, the original destination and the source workload. A ClusterIP is load-balanced here over
// healthy endpoints; a mesh workload (tunnel protocol HBONE) is reached through HBONE at
// <pod ip>:15008; anything else is passed through in plaintext. Kept apart from the handler
// (handle.ts) so the decision is tested on its own, against a real mesh state.
//
// Waypoints, as ztunnel's build_request: a Service VIP whose Service names a waypoint
// (`istio.io/waypoint-for` service or all), or a pod IP whose Workload names one (workload or all),
// goes over HBONE to the waypoint — one of its workloads, picked like a service endpoint, on the
// GatewayAddress's hboneMtlsPort — with the ORIGINAL destination as :authority (the VIP and port, or
// the pod IP and port) and the waypoint workload's identity expected. A pod IP whose Workload names
// only a service waypoint goes straight to the pod, as in Istio (that waypoint is for the service's
// traffic). Traffic from one of the waypoint's own workloads is never sent back to it (no loop). A
// waypoint the state cannot resolve, or with no endpoint to dial, refuses the connection: never
// direct, which would skip the waypoint's policy.
//
// One deliberate difference from ztunnel: a VIP whose Service has no waypoint, load-balanced to an
// endpoint whose Workload has one (waypoint-for workload), goes through that workload's waypoint,
// addressed to the endpoint picked (ztunnel sends it direct). weft's destination agent accepts a
// workload with a waypoint of its own only from a waypoint (authorize.ts); sent direct it would be
// refused.
import { WEFT } from '../../../bpf/consts.ts';
import { formatSpiffe } from '../../../api/spiffe.ts';
import type { GatewayAddress, Service, Workload } from '../../../api/mesh.ts';
import type { Endpoint } from '../../capture/backend.ts';
import type { MeshState } from '../../state/mesh-state.ts';
import { describeWaypoint, findWaypoint, isWaypointWorkload } from '../../state/waypoint.ts';

export type OutboundPlan =
  /**
   * `hbone` is dialled, `target` is the CONNECT's :authority, `dst` the workload at `hbone` and
   * `dstIdentity` its identity. Through a waypoint, `waypoint` is set: `dst` is then the waypoint's
   * workload and `target` the original destination.
   */
  | { kind: 'hbone'; dst: Workload; dstIdentity: string; hbone: Endpoint; target: Endpoint; service?: Service; waypoint?: GatewayAddress }
  | { kind: 'passthrough'; target: Endpoint; dst?: Workload; service?: Service }
  | { kind: 'refuse'; reason: string; service?: Service };

export const identityOf = (w: Workload) => formatSpiffe({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });

/** Of a dual-stack workload's addresses, the one of `like`'s family (the first if it has none). */
export function sameFamily(addresses: readonly string[], like: string): string | undefined {
  const v6 = like.includes(':');
  return addresses.find((a) => a.includes(':') === v6) ?? addresses[0];
}

type Pick = (n: number) => number;

function toWorkload(w: Workload, port: number, via: string, service?: Service): OutboundPlan {
  // An app that dialled IPv6 keeps IPv6 end to end (as ztunnel does): its peer sees the family it used.
  const address = sameFamily(w.addresses, via)!;
  if (w.tunnelProtocol === 'HBONE')
    return { kind: 'hbone', dst: w, dstIdentity: identityOf(w), hbone: { address, port: WEFT.PORT_HBONE }, target: { address, port }, service };
  return { kind: 'passthrough', target: { address, port }, dst: w, service };
}

/**
 * HBONE to the waypoint `gw`, carrying `target` as :authority. A waypoint Service is balanced over
 * its healthy, addressed endpoints that serve hboneMtlsPort (the Service must have that port), on
 * their target port; a waypoint named by a workload's address is that workload. The address is of
 * the family the app dialled for a hostname reference, of the reference's own family for an address
 * (ztunnel's fetch_waypoint).
 */
function toWaypoint(state: MeshState, gw: GatewayAddress, target: Endpoint, pick: Pick, service?: Service): OutboundPlan {
  const name = describeWaypoint(gw);
  const found = findWaypoint(state, gw);
  if (!found) return { kind: 'refuse', reason: `waypoint ${name} is not in the mesh state`, service };
  const like = 'hostname' in gw ? target.address : gw.address;
  let wp: Workload | undefined;
  let port = gw.hboneMtlsPort;
  if (found.service) {
    const s = found.service;
    const key = `${s.namespace}/${s.hostname}`;
    const mapping = s.ports.find((p) => p.servicePort === gw.hboneMtlsPort);
    const candidates = mapping ? found.workloads.filter((w) => w.status === 'HEALTHY' && w.addresses.length > 0) : [];
    if (candidates.length === 0) return { kind: 'refuse', reason: `waypoint ${name}: no healthy endpoint of ${s.hostname} on port ${gw.hboneMtlsPort}`, service };
    wp = candidates[pick(candidates.length)]!;
    port = wp.services[key]?.find((p) => p.servicePort === gw.hboneMtlsPort)?.targetPort || mapping!.targetPort || gw.hboneMtlsPort;
  } else {
    wp = found.workloads[0];
    if (!wp?.addresses.length) return { kind: 'refuse', reason: `waypoint ${name}: its workload has no address`, service };
  }
  return { kind: 'hbone', dst: wp, dstIdentity: identityOf(wp), hbone: { address: sameFamily(wp.addresses, like)!, port }, target, service, waypoint: gw };
}

/**
 * The plan for a connection to `orig` from the workload `src` (undefined when the source pod is not
 * in the state yet). `pick(n)` chooses among n candidates (random by default; tests fix it).
 */
export function planOutbound(state: MeshState, orig: Endpoint, pick: Pick = (n) => Math.floor(Math.random() * n), src?: Workload): OutboundPlan {
  // A waypoint is skipped only by its own workloads, sending what they already processed onward.
  const through = (gw: GatewayAddress | undefined): gw is GatewayAddress => !!gw && !isWaypointWorkload(state, gw, src);
  const svc = state.servicesByVip.get(orig.address);
  if (svc) {
    if (through(svc.waypoint)) return toWaypoint(state, svc.waypoint, orig, pick, svc);
    const key = `${svc.namespace}/${svc.hostname}`;
    if (!svc.ports.some((p) => p.servicePort === orig.port)) return { kind: 'passthrough', target: orig, service: svc };
    const candidates = (state.endpoints.get(key) ?? []).filter((w) => w.status === 'HEALTHY' && w.addresses.length > 0 && w.services[key]?.some((p) => p.servicePort === orig.port));
    if (candidates.length === 0) return { kind: 'refuse', reason: `no healthy endpoint for ${svc.hostname}:${orig.port}`, service: svc };
    const ep = candidates[pick(candidates.length)]!;
    const target = ep.services[key]!.find((p) => p.servicePort === orig.port)!.targetPort || orig.port;
    if (through(ep.waypoint)) return toWaypoint(state, ep.waypoint, { address: sameFamily(ep.addresses, orig.address)!, port: target }, pick, svc);
    return toWorkload(ep, target, orig.address, svc);
  }
  const w = state.workloadsByIp.get(orig.address);
  if (w) return through(w.waypoint) ? toWaypoint(state, w.waypoint, orig, pick) : toWorkload(w, orig.port, orig.address);
  return { kind: 'passthrough', target: orig };
}
