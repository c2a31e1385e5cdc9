// A dual-stack destination is reached in the family the app dialled: an IPv6 connection must not
// turn into IPv4 halfway (the peer and policies would see another address than the app used).
import { describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../../../src/api/mesh.ts';
import { planOutbound, sameFamily } from '../../../../src/agent/proxy/outbound/plan.ts';
import { MeshState } from '../../../../src/agent/state/mesh-state.ts';

const workload = (name: string, addresses: string[], tunnelProtocol: Workload['tunnelProtocol'] = 'HBONE'): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses, network: '', tunnelProtocol, trustDomain: 'cluster.local', serviceAccount: 'default',
  node: 'node-1', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: { 'ns/svc.ns.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] }, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const svc = (addresses: string[]): Service => ({ name: 'svc', namespace: 'ns', hostname: 'svc.ns.svc.cluster.local', addresses, ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [] });

describe('outbound plan, dual stack', () => {
  const dual = workload('dual', ['10.244.1.2', 'fd00:10:244:1::2']);
  const state = MeshState.empty().with({ workloads: [[dual.uid, dual]], services: [['ns/svc.ns.svc.cluster.local', svc(['10.96.0.10', 'fd00:10:96::a'])]] });

  it('dials the IPv6 address of a workload reached by its IPv6 address, HBONE included', () => {
    const p = planOutbound(state, { address: 'fd00:10:244:1::2', port: 8080 });
    expect(p).toMatchObject({ kind: 'hbone', target: { address: 'fd00:10:244:1::2', port: 8080 }, hbone: { address: 'fd00:10:244:1::2', port: 15008 } });
    expect(planOutbound(state, { address: '10.244.1.2', port: 8080 })).toMatchObject({ kind: 'hbone', hbone: { address: '10.244.1.2' } });
  });

  it('picks the endpoint address of the VIP\'s family', () => {
    expect(planOutbound(state, { address: 'fd00:10:96::a', port: 80 })).toMatchObject({ kind: 'hbone', target: { address: 'fd00:10:244:1::2', port: 8080 } });
    expect(planOutbound(state, { address: '10.96.0.10', port: 80 })).toMatchObject({ kind: 'hbone', target: { address: '10.244.1.2', port: 8080 } });
  });

  it('falls back to the first address when the workload has none of that family', () => {
    expect(sameFamily(['10.244.1.2'], 'fd00::1')).toBe('10.244.1.2');
    expect(sameFamily(['fd00::2', '10.0.0.2'], '10.0.0.9')).toBe('10.0.0.2');
    expect(sameFamily([], '10.0.0.9')).toBeUndefined();
  });
});

// Table-driven, as ztunnel's build_request tests: one real mesh state and, for each original
// destination, the exact plan. The model has no waypoints yet (Istio's workload API field is not
// carried), so no case routes through one.
describe('outbound plan, decision table', () => {
  const wl = (name: string, o: { addresses: string[]; node?: string; tunnel?: Workload['tunnelProtocol']; status?: Workload['status']; services?: Workload['services'] }): Workload => ({
    uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses: o.addresses, network: '', tunnelProtocol: o.tunnel ?? 'HBONE', trustDomain: 'cluster.local', serviceAccount: name,
    node: o.node ?? 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: [],
    status: o.status ?? 'HEALTHY', clusterId: 'Kubernetes',
  });
  const service = (name: string, addresses: string[], ports: Service['ports']): Service => ({ name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, addresses, ports, subjectAltNames: [] });
  const WEB = 'shop/web.shop.svc.cluster.local';
  const LEGACY = 'shop/legacy.shop.svc.cluster.local';
  const SICK = 'shop/sick.shop.svc.cluster.local';
  const V4 = 'shop/v4.shop.svc.cluster.local';
  // web: two HBONE endpoints, one on this node (node-1) and one on node-2; only web-b serves 443.
  const webA = wl('web-a', { addresses: ['10.244.1.10'], services: { [WEB]: [{ servicePort: 80, targetPort: 8080 }] } });
  const webB = wl('web-b', { addresses: ['10.244.2.10'], node: 'node-2', services: { [WEB]: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 443, targetPort: 0 }] } });
  // legacy: out of the mesh (no HBONE), behind a service that maps 80 to 9090.
  const legacy = wl('legacy', { addresses: ['10.244.2.20'], node: 'node-2', tunnel: 'NONE', services: { [LEGACY]: [{ servicePort: 80, targetPort: 9090 }] } });
  // sick: the only endpoint of its service, unhealthy; addressless: no address, never dialled.
  const sick = wl('sick', { addresses: ['10.244.2.30'], status: 'UNHEALTHY', services: { [SICK]: [{ servicePort: 80, targetPort: 8080 }] } });
  const addressless = wl('addressless', { addresses: [], services: { [SICK]: [{ servicePort: 80, targetPort: 8080 }] } });
  // v4: an IPv4-only workload behind a dual-stack service.
  const v4 = wl('v4', { addresses: ['10.244.1.40'], services: { [V4]: [{ servicePort: 80, targetPort: 8080 }] } });
  const svcWeb = service('web', ['10.96.0.10'], [{ servicePort: 80, targetPort: 8080 }, { servicePort: 443, targetPort: 443 }]);
  const svcLegacy = service('legacy', ['10.96.0.20'], [{ servicePort: 80, targetPort: 9090 }]);
  const svcSick = service('sick', ['10.96.0.30'], [{ servicePort: 80, targetPort: 8080 }]);
  const svcV4 = service('v4', ['10.96.0.40', 'fd00:10:96::40'], [{ servicePort: 80, targetPort: 8080 }]);
  const state = MeshState.empty().with({
    workloads: [webA, webB, legacy, sick, addressless, v4].map((w) => [w.uid, w] as [string, Workload]),
    services: [svcWeb, svcLegacy, svcSick, svcV4].map((s) => [`shop/${s.hostname}`, s] as [string, Service]),
  });
  const idOf = (w: Workload) => `spiffe://cluster.local/ns/shop/sa/${w.serviceAccount}`;
  const hbone = (w: Workload, address: string, port: number, svc?: Service) => ({ kind: 'hbone', dst: w, dstIdentity: idOf(w), hbone: { address, port: 15008 }, target: { address, port }, service: svc });

  type Case = { name: string; dst: { address: string; port: number }; pick?: number; want: unknown };
  const cases: Case[] = [
    { name: 'pod IP of a mesh workload on this node: HBONE to it (node-local is chosen later, by the enrolled pods)', dst: { address: '10.244.1.10', port: 8080 }, want: hbone(webA, '10.244.1.10', 8080) },
    { name: 'pod IP of a mesh workload on another node: HBONE to its 15008', dst: { address: '10.244.2.10', port: 8080 }, want: hbone(webB, '10.244.2.10', 8080) },
    { name: 'pod IP keeps the port dialled, whatever services map', dst: { address: '10.244.2.10', port: 9999 }, want: hbone(webB, '10.244.2.10', 9999) },
    { name: 'service VIP: the picked endpoint, on the target port', dst: { address: '10.96.0.10', port: 80 }, pick: 0, want: hbone(webA, '10.244.1.10', 8080, svcWeb) },
    { name: 'service VIP: the other endpoint, on the other node', dst: { address: '10.96.0.10', port: 80 }, pick: 1, want: hbone(webB, '10.244.2.10', 8080, svcWeb) },
    { name: 'service VIP: only endpoints serving that service port, target port 0 keeps it', dst: { address: '10.96.0.10', port: 443 }, pick: 0, want: hbone(webB, '10.244.2.10', 443, svcWeb) },
    { name: 'service VIP on a port the service lacks: plaintext to the VIP', dst: { address: '10.96.0.10', port: 8443 }, want: { kind: 'passthrough', target: { address: '10.96.0.10', port: 8443 }, service: svcWeb } },
    { name: 'pod IP of a workload out of the mesh: plaintext', dst: { address: '10.244.2.20', port: 9090 }, want: { kind: 'passthrough', target: { address: '10.244.2.20', port: 9090 }, dst: legacy, service: undefined } },
    { name: 'service VIP backed out of the mesh: plaintext to the endpoint and target port', dst: { address: '10.96.0.20', port: 80 }, want: { kind: 'passthrough', target: { address: '10.244.2.20', port: 9090 }, dst: legacy, service: svcLegacy } },
    { name: 'service VIP without a healthy, addressed endpoint: refused', dst: { address: '10.96.0.30', port: 80 }, want: { kind: 'refuse', reason: 'no healthy endpoint for sick.shop.svc.cluster.local:80', service: svcSick } },
    { name: 'pod IP of an unhealthy workload: still HBONE (health is for load balancing)', dst: { address: '10.244.2.30', port: 8080 }, want: hbone(sick, '10.244.2.30', 8080) },
    { name: 'an address the mesh does not know: plaintext, as dialled', dst: { address: '203.0.113.5', port: 443 }, want: { kind: 'passthrough', target: { address: '203.0.113.5', port: 443 } } },
    { name: 'an unknown IPv6 address: plaintext, as dialled', dst: { address: '2001:db8::5', port: 443 }, want: { kind: 'passthrough', target: { address: '2001:db8::5', port: 443 } } },
    { name: 'IPv4 VIP of a dual-stack service: the IPv4 endpoint', dst: { address: '10.96.0.40', port: 80 }, want: hbone(v4, '10.244.1.40', 8080, svcV4) },
    { name: 'family mismatch: IPv6 VIP, IPv4-only endpoint: its IPv4 address', dst: { address: 'fd00:10:96::40', port: 80 }, want: hbone(v4, '10.244.1.40', 8080, svcV4) },
  ];

  it.each(cases)('$name', (c) => {
    expect(planOutbound(state, c.dst, () => c.pick ?? 0)).toEqual(c.want);
  });

  it('load-balances over the endpoints it may pick, and only those', () => {
    const seen: number[] = [];
    planOutbound(state, { address: '10.96.0.10', port: 80 }, (n) => (seen.push(n), 0));
    planOutbound(state, { address: '10.96.0.10', port: 443 }, (n) => (seen.push(n), 0));
    expect(seen).toEqual([2, 1]);
  });
});
