// The inbound authorization decision, shared by the two ways a connection reaches a pod: inbound
// (HBONE or plaintext, inbound/) and the node-local fast path (node-local/), which applies the
// destination's policy itself. It lived in inbound.ts, which node-local then had to import.
//
// Waypoints. A workload with a waypoint of its own (Workload.waypoint: `istio.io/waypoint-for`
// workload or all) is reached only through a waypoint: every connection to it — HBONE, plaintext on
// 15006, node-local — must come from one of that waypoint's workloads (identity and address, as
// ztunnel's check_from_waypoint), or from the waypoint of a Service it backs; anything else is
// refused as a policy denial (HBONE 401, flag DENY) naming the waypoint. weft's source agents send
// such traffic to the waypoint (outbound/plan.ts), so only a client outside the mesh or one that
// skipped it arrives here. ztunnel itself refuses nothing here (Istio leaves it to an ALLOW policy
// naming the waypoint's principal); the issue asks that traffic the waypoint must see cannot skip it.
// A workload behind a service waypoint only (waypoint-for service) accepts direct connections to its
// pod IP: in Istio that waypoint is for traffic addressed to the Service, and a pod IP is not; the
// Service's own traffic is sent to the waypoint by the source. A waypoint the state cannot resolve
// has no members: its workloads are refused everything (fail closed).
import type { SpiffeId } from '../../api/spiffe.ts';
import type { Workload } from '../../api/mesh.ts';
import { WEFT } from '../../bpf/consts.ts';
import type { Endpoint } from '../capture/backend.ts';
import type { AuthorizationEngine } from '../rbac/engine.ts';
import type { MeshState } from '../state/mesh-state.ts';
import { describeWaypoint, isWaypointPeer, requiredWaypoints } from '../state/waypoint.ts';
import type { ProxyPod } from './types.ts';

export type Verdict = { ok: true; dst: Workload; audit: string[] } | { ok: false; reason: string; policy?: string; dst?: Workload };

/** What the decision reads: a snapshot of the mesh, its engine, and the agent's own ports. */
export interface AuthorizeDeps {
  state: () => MeshState;
  engine: (state: MeshState) => AuthorizationEngine;
  /** DEFAULT_AGENT_PORTS when absent. */
  agentPorts?: ReadonlySet<number>;
}

/** The agent's own ports, as ztunnel's illegal_ports (plus its admin ports, which Istio reserves too). */
export const DEFAULT_AGENT_PORTS: ReadonlySet<number> = new Set([WEFT.PORT_OUTBOUND, WEFT.PORT_INBOUND, WEFT.PORT_HBONE, 15000, 15020, 15021]);

/**
 * Who may reach this pod at `dst`: the destination must be this pod and known to the mesh state,
 * and not one of the agent's ports. Delivering to those would be the agent connecting to itself:
 * under iptables capture a plaintext connection to podIP:15006 is dialled back to 15006 and again,
 * without end; a CONNECT to podIP:15008 nests a second HBONE session whose peer address is the pod
 * itself, so source-IP rules would judge the pod instead of the real client.
 */
export function authorize(deps: AuthorizeDeps, pod: Pick<ProxyPod, 'namespace' | 'name' | 'ips'>, dst: Endpoint, src: { identity?: SpiffeId; ip: string }): Verdict {
  if ((deps.agentPorts ?? DEFAULT_AGENT_PORTS).has(dst.port)) return { ok: false, reason: `destination port ${dst.port} is the agent's own (self-call refused)` };
  if (!pod.ips.includes(dst.address)) return { ok: false, reason: `destination ${dst.address} is not pod ${pod.namespace}/${pod.name}` };
  const state = deps.state();
  const w = state.workloadsByIp.get(dst.address);
  if (!w) return { ok: false, reason: `destination ${dst.address} is not (yet) in the mesh state` };
  const waypoints = requiredWaypoints(state, w);
  if (waypoints.length && !waypoints.some((gw) => isWaypointPeer(state, gw, src))) {
    const name = describeWaypoint(waypoints[0]!);
    return { ok: false, reason: `${w.namespace}/${w.name} is reached only through its waypoint ${name}`, policy: `waypoint ${name}`, dst: w };
  }
  const d = deps.engine(state).evaluate({ srcIdentity: src.identity, srcIp: src.ip, dstIp: dst.address, dstPort: dst.port }, w);
  return d.allowed ? { ok: true, dst: w, audit: d.audit } : { ok: false, reason: 'denied by authorization policy', policy: d.policy, dst: w };
}

/**
 * Plaintext on 15006 from the pod's own address: capture never steers a pod's own connections to
 * it (loopback and pod-to-self stay in the pod), so this is the agent's own dial coming back.
 * Refused before anything is dialled, whatever the destination.
 */
export function ownAddressRefusal(pod: Pick<ProxyPod, 'ips'>, srcIp: string): string | undefined {
  return pod.ips.includes(srcIp) ? `connection from the pod's own address ${srcIp} was not captured (self-call refused)` : undefined;
}
