// Decide, then act: where a captured outbound connection goes, as a pure function of the mesh
// state and the original destination. A ClusterIP is load-balanced here over healthy endpoints;
// a mesh workload (tunnel protocol HBONE) is reached through HBONE at <pod ip>:15008; anything
// else is passed through in plaintext. Kept apart from the handler (handle.ts) so the decision
// is tested on its own, against a real mesh state.
import { WEFT } from '../../../bpf/consts.ts';
import { formatSpiffe } from '../../../api/spiffe.ts';
import type { Service, Workload } from '../../../api/mesh.ts';
import type { Endpoint } from '../../capture/backend.ts';
import type { MeshState } from '../../state/mesh-state.ts';

export type OutboundPlan =
  | { kind: 'hbone'; dst: Workload; dstIdentity: string; hbone: Endpoint; target: Endpoint; service?: Service }
  | { kind: 'passthrough'; target: Endpoint; dst?: Workload; service?: Service }
  | { kind: 'refuse'; reason: string; service?: Service };

export const identityOf = (w: Workload) => formatSpiffe({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount });

/** Of a dual-stack workload's addresses, the one of `like`'s family (the first if it has none). */
export function sameFamily(addresses: readonly string[], like: string): string | undefined {
  const v6 = like.includes(':');
  return addresses.find((a) => a.includes(':') === v6) ?? addresses[0];
}

function toWorkload(w: Workload, port: number, via: string, service?: Service): OutboundPlan {
  // An app that dialled IPv6 keeps IPv6 end to end (as ztunnel does): its peer sees the family it used.
  const address = sameFamily(w.addresses, via)!;
  if (w.tunnelProtocol === 'HBONE')
    return { kind: 'hbone', dst: w, dstIdentity: identityOf(w), hbone: { address, port: WEFT.PORT_HBONE }, target: { address, port }, service };
  return { kind: 'passthrough', target: { address, port }, dst: w, service };
}

export function planOutbound(state: MeshState, orig: Endpoint, pick: (n: number) => number = (n) => Math.floor(Math.random() * n)): OutboundPlan {
  const svc = state.servicesByVip.get(orig.address);
  if (svc) {
    const key = `${svc.namespace}/${svc.hostname}`;
    if (!svc.ports.some((p) => p.servicePort === orig.port)) return { kind: 'passthrough', target: orig, service: svc };
    const candidates = (state.endpoints.get(key) ?? []).filter((w) => w.status === 'HEALTHY' && w.addresses.length > 0 && w.services[key]?.some((p) => p.servicePort === orig.port));
    if (candidates.length === 0) return { kind: 'refuse', reason: `no healthy endpoint for ${svc.hostname}:${orig.port}`, service: svc };
    const ep = candidates[pick(candidates.length)]!;
    const target = ep.services[key]!.find((p) => p.servicePort === orig.port)!.targetPort || orig.port;
    return toWorkload(ep, target, orig.address, svc);
  }
  const w = state.workloadsByIp.get(orig.address);
  if (w) return toWorkload(w, orig.port, orig.address);
  return { kind: 'passthrough', target: orig };
}
