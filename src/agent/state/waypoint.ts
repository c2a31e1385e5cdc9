// Who a waypoint is, in a mesh snapshot. A Service or Workload names its waypoint by Istio's
// GatewayAddress (an address, or a Service hostname); the outbound path resolves it to the workloads
// to dial (proxy/outbound/plan.ts), the inbound path asks whether a peer is one of them
// (proxy/authorize.ts). Both read it here, with the state, as ztunnel's state does.
import type { SpiffeId } from '../../api/spiffe.ts';
import type { GatewayAddress, Service, Workload } from '../../api/mesh.ts';
import type { MeshState } from './mesh-state.ts';

/** How a waypoint reference is named in reasons and logs: "ns/hostname" or its address, with its port. */
export const describeWaypoint = (gw: GatewayAddress) => `${'hostname' in gw ? `${gw.hostname.namespace}/${gw.hostname.hostname}` : gw.address}:${gw.hboneMtlsPort}`;

/**
 * What a waypoint reference names: a Service (its endpoints are the waypoint's workloads, all of
 * them, healthy or not) or one Workload; undefined when the snapshot has neither. As ztunnel: an
 * address is a workload's before it is a service VIP; a hostname is a Service's "namespace/hostname"
 * (weft's workloads carry no hostname). The network of an address is not compared: weft has one.
 */
export function findWaypoint(state: MeshState, gw: GatewayAddress): { service?: Service; workloads: readonly Workload[] } | undefined {
  if ('hostname' in gw) {
    const service = state.services.get(`${gw.hostname.namespace}/${gw.hostname.hostname}`);
    return service && { service, workloads: state.endpoints.get(`${service.namespace}/${service.hostname}`) ?? [] };
  }
  const w = state.workloadsByIp.get(gw.address);
  if (w) return { workloads: [w] };
  const service = state.servicesByVip.get(gw.address);
  return service && { service, workloads: state.endpoints.get(`${service.namespace}/${service.hostname}`) ?? [] };
}

const sameIdentity = (w: Workload, id: SpiffeId) => w.trustDomain === id.trustDomain && w.namespace === id.namespace && w.serviceAccount === id.serviceAccount;

/**
 * Whether a peer is one of the waypoint's workloads: its authenticated identity is that workload's
 * and its address one of the workload's addresses (ztunnel's check_from_waypoint). A peer without
 * identity (plaintext) never is; a waypoint the snapshot cannot resolve has no members.
 */
export function isWaypointPeer(state: MeshState, gw: GatewayAddress, peer: { identity?: SpiffeId; ip: string }): boolean {
  const id = peer.identity;
  if (!id) return false;
  return !!findWaypoint(state, gw)?.workloads.some((w) => sameIdentity(w, id) && w.addresses.includes(peer.ip));
}

/** Whether `src` is itself one of the waypoint's workloads: its traffic must not be sent back to it. */
export const isWaypointWorkload = (state: MeshState, gw: GatewayAddress, src: Workload | undefined) =>
  !!src && !!findWaypoint(state, gw)?.workloads.some((w) => w.uid === src.uid);

/**
 * The waypoints a workload accepts traffic from, when it must be reached through one: its own
 * (Workload.waypoint: `istio.io/waypoint-for` workload or all), and then also the waypoint of each
 * Service it backs (that waypoint sends the service's traffic to its endpoints after its L7 work).
 * Empty when the workload has no waypoint of its own: see authorize.ts for why.
 */
export function requiredWaypoints(state: MeshState, w: Workload): GatewayAddress[] {
  if (!w.waypoint) return [];
  const out = [w.waypoint];
  for (const key of Object.keys(w.services)) {
    const gw = state.services.get(key)?.waypoint;
    if (gw) out.push(gw);
  }
  return out;
}
