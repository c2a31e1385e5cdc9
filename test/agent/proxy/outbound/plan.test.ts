// A dual-stack destination is reached in the family the app dialled: an IPv6 connection must not
// turn into IPv4 halfway (the peer and policies would see another address than the app used).
import { describe, expect, it } from 'vitest';
import type { GatewayAddress, Service, Workload } from '../../../../src/api/mesh.ts';
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
// destination, the exact plan. No workload or service here has a waypoint (see the waypoint table
// below): the L4 decisions stay what they were.
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

// Waypoints, table-driven as ztunnel's build_request_destination_*waypoint* tests. The fields say what
// `istio.io/waypoint-for` asked: service -> Service.waypoint; workload -> Workload.waypoint; all -> both.
describe('outbound plan, waypoints', () => {
  const wl = (name: string, o: { addresses: string[]; sa?: string; status?: Workload['status']; services?: Workload['services']; waypoint?: GatewayAddress; tunnel?: Workload['tunnelProtocol'] }): Workload => ({
    uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses: o.addresses, network: '', tunnelProtocol: o.tunnel ?? 'HBONE', trustDomain: 'cluster.local', serviceAccount: o.sa ?? name,
    node: 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: [],
    status: o.status ?? 'HEALTHY', clusterId: 'Kubernetes', ...(o.waypoint ? { waypoint: o.waypoint } : {}),
  });
  const service = (name: string, addresses: string[], ports: Service['ports'], waypoint?: GatewayAddress): Service => ({
    name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, addresses, ports, subjectAltNames: [], ...(waypoint ? { waypoint } : {}),
  });
  const key = (name: string) => `shop/${name}.shop.svc.cluster.local`;
  const HBONE = [{ servicePort: 15008, targetPort: 15008 }];
  // The waypoint: two pods (one dual stack) behind its Service, under its own service account.
  const wpA = wl('waypoint-a', { addresses: ['10.244.1.50', 'fd00:10:244:1::50'], sa: 'waypoint', services: { [key('waypoint')]: HBONE } });
  const wpB = wl('waypoint-b', { addresses: ['10.244.2.50'], sa: 'waypoint', services: { [key('waypoint')]: HBONE } });
  const svcWp = service('waypoint', ['10.96.0.50'], HBONE);
  const byHost: GatewayAddress = { hostname: { namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local' }, hboneMtlsPort: 15008 };
  const byVip: GatewayAddress = { address: '10.96.0.50', network: '', hboneMtlsPort: 15008 };
  const byPod: GatewayAddress = { address: '10.244.1.50', network: '', hboneMtlsPort: 15008 };
  // waypoint-for=service: api's Service names the waypoint, its pod does not.
  const apiA = wl('api-a', { addresses: ['10.244.2.60'], services: { [key('api')]: [{ servicePort: 80, targetPort: 8080 }] } });
  const svcApi = service('api', ['10.96.0.60', 'fd00:10:96::60'], [{ servicePort: 80, targetPort: 8080 }], byHost);
  // waypoint-for=workload: the job pod names the waypoint (dual stack), its Service does not.
  const job = wl('job', { addresses: ['10.244.2.70', 'fd00:10:244:2::70'], services: { [key('jobs')]: [{ servicePort: 80, targetPort: 9000 }] }, waypoint: byHost });
  const svcJobs = service('jobs', ['10.96.0.70'], [{ servicePort: 80, targetPort: 9000 }]);
  // waypoint-for=all, the waypoint named by its VIP: both fields set.
  const db = wl('db', { addresses: ['10.244.2.80'], services: { [key('db')]: [{ servicePort: 5432, targetPort: 5432 }] }, waypoint: byVip });
  const svcDb = service('db', ['10.96.0.80'], [{ servicePort: 5432, targetPort: 5432 }], byVip);
  // A waypoint named by a pod address; a legacy (not HBONE) workload behind a waypoint.
  const solo = wl('solo', { addresses: ['10.244.2.90'], waypoint: byPod });
  const legacy = wl('legacy', { addresses: ['10.244.2.91'], tunnel: 'NONE', waypoint: byHost });
  // Waypoints that cannot be dialled: unknown hostname, unknown VIP, no healthy endpoint, no 15008 port.
  const lost = wl('lost', { addresses: ['10.244.2.100'], waypoint: { hostname: { namespace: 'shop', hostname: 'gone.shop.svc.cluster.local' }, hboneMtlsPort: 15008 } });
  const svcOrphan = service('orphan', ['10.96.0.101'], [{ servicePort: 80, targetPort: 80 }], { address: '10.96.9.9', network: '', hboneMtlsPort: 15008 });
  const wpSick = wl('waypoint-sick', { addresses: ['10.244.1.102'], sa: 'waypoint', status: 'UNHEALTHY', services: { [key('waypoint-sick')]: HBONE } });
  const svcWpSick = service('waypoint-sick', ['10.96.0.102'], HBONE);
  const svcBehindSick = service('behind-sick', ['10.96.0.103'], [{ servicePort: 80, targetPort: 80 }], { address: '10.96.0.102', network: '', hboneMtlsPort: 15008 });
  const svcWpNoPort = service('waypoint-noport', ['10.96.0.104'], [{ servicePort: 80, targetPort: 80 }]);
  const wpNoPort = wl('waypoint-noport', { addresses: ['10.244.1.104'], sa: 'waypoint', services: { [key('waypoint-noport')]: [{ servicePort: 80, targetPort: 80 }] } });
  const svcBehindNoPort = service('behind-noport', ['10.96.0.105'], [{ servicePort: 80, targetPort: 80 }], { address: '10.96.0.104', network: '', hboneMtlsPort: 15008 });
  const client = wl('client', { addresses: ['10.244.1.5'] });

  const state = MeshState.empty().with({
    workloads: [wpA, wpB, apiA, job, db, solo, legacy, lost, wpSick, wpNoPort, client].map((w) => [w.uid, w] as [string, Workload]),
    services: [svcWp, svcApi, svcJobs, svcDb, svcOrphan, svcWpSick, svcBehindSick, svcWpNoPort, svcBehindNoPort].map((s) => [`shop/${s.hostname}`, s] as [string, Service]),
  });
  const WP_ID = 'spiffe://cluster.local/ns/shop/sa/waypoint';
  const viaWp = (wp: Workload, address: string, target: { address: string; port: number }, gw: GatewayAddress, svc?: Service) =>
    ({ kind: 'hbone', dst: wp, dstIdentity: WP_ID, hbone: { address, port: 15008 }, target, service: svc, waypoint: gw });
  const direct = (w: Workload, address: string, port: number, svc?: Service) =>
    ({ kind: 'hbone', dst: w, dstIdentity: `spiffe://cluster.local/ns/shop/sa/${w.serviceAccount}`, hbone: { address, port: 15008 }, target: { address, port }, service: svc });

  type Case = { name: string; dst: { address: string; port: number }; src?: Workload; pick?: number; want: unknown };
  const cases: Case[] = [
    // waypoint-for=service
    { name: 'service: its VIP goes to the waypoint, :authority the VIP and port', dst: { address: '10.96.0.60', port: 80 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.96.0.60', port: 80 }, byHost, svcApi) },
    { name: 'service: the waypoint\'s endpoints are balanced like any service\'s', dst: { address: '10.96.0.60', port: 80 }, src: client, pick: 1, want: viaWp(wpB, '10.244.2.50', { address: '10.96.0.60', port: 80 }, byHost, svcApi) },
    { name: 'service: a port the Service lacks still goes to the waypoint (it decides)', dst: { address: '10.96.0.60', port: 81 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.96.0.60', port: 81 }, byHost, svcApi) },
    { name: 'service: hostname form, IPv6 VIP: the waypoint address of that family', dst: { address: 'fd00:10:96::60', port: 80 }, src: client, want: viaWp(wpA, 'fd00:10:244:1::50', { address: 'fd00:10:96::60', port: 80 }, byHost, svcApi) },
    { name: 'service: its pod dialled by IP goes direct (the waypoint is for the Service\'s traffic)', dst: { address: '10.244.2.60', port: 8080 }, src: client, want: direct(apiA, '10.244.2.60', 8080) },
    { name: 'service: an unknown source (not in the state yet) still goes to the waypoint', dst: { address: '10.96.0.60', port: 80 }, want: viaWp(wpA, '10.244.1.50', { address: '10.96.0.60', port: 80 }, byHost, svcApi) },
    // waypoint-for=workload
    { name: 'workload: its pod IP goes to the waypoint, :authority the pod IP and port', dst: { address: '10.244.2.70', port: 9000 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.70', port: 9000 }, byHost) },
    { name: 'workload: over IPv6, the waypoint\'s IPv6 address', dst: { address: 'fd00:10:244:2::70', port: 9000 }, src: client, want: viaWp(wpA, 'fd00:10:244:1::50', { address: 'fd00:10:244:2::70', port: 9000 }, byHost) },
    { name: 'workload: its Service (no waypoint) goes through the endpoint\'s waypoint, addressed to the endpoint', dst: { address: '10.96.0.70', port: 80 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.70', port: 9000 }, byHost, svcJobs) },
    { name: 'workload: waypoint named by a pod address is that pod, on hboneMtlsPort', dst: { address: '10.244.2.90', port: 7000 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.90', port: 7000 }, byPod) },
    { name: 'workload: a workload out of HBONE behind a waypoint still goes through it', dst: { address: '10.244.2.91', port: 80 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.91', port: 80 }, byHost) },
    // waypoint-for=all, named by the waypoint Service's VIP (the IPv4 address, as given)
    { name: 'all: the VIP goes to the waypoint', dst: { address: '10.96.0.80', port: 5432 }, src: client, pick: 1, want: viaWp(wpB, '10.244.2.50', { address: '10.96.0.80', port: 5432 }, byVip, svcDb) },
    { name: 'all: the pod IP goes to the waypoint', dst: { address: '10.244.2.80', port: 5432 }, src: client, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.80', port: 5432 }, byVip) },
    // the waypoint's own traffic: never back to itself
    { name: 'from the waypoint: the Service VIP goes to its endpoint', dst: { address: '10.96.0.60', port: 80 }, src: wpA, want: direct(apiA, '10.244.2.60', 8080, svcApi) },
    { name: 'from the other waypoint pod: the pod IP goes direct', dst: { address: '10.244.2.70', port: 9000 }, src: wpB, want: direct(job, '10.244.2.70', 9000) },
    { name: 'from the waypoint: the Service of a workload-waypoint pod goes to the pod', dst: { address: '10.96.0.70', port: 80 }, src: wpB, want: direct(job, '10.244.2.70', 9000, svcJobs) },
    { name: 'from the waypoint named by pod address: direct', dst: { address: '10.244.2.90', port: 7000 }, src: wpA, want: direct(solo, '10.244.2.90', 7000) },
    { name: 'from another pod of the same service account: still through the waypoint', dst: { address: '10.244.2.70', port: 9000 }, src: wpSick, want: viaWp(wpA, '10.244.1.50', { address: '10.244.2.70', port: 9000 }, byHost) },
    // fail closed
    { name: 'unknown waypoint hostname: refused, never direct', dst: { address: '10.244.2.100', port: 80 }, src: client, want: { kind: 'refuse', reason: 'waypoint shop/gone.shop.svc.cluster.local:15008 is not in the mesh state', service: undefined } },
    { name: 'unknown waypoint address: refused', dst: { address: '10.96.0.101', port: 80 }, src: client, want: { kind: 'refuse', reason: 'waypoint 10.96.9.9:15008 is not in the mesh state', service: svcOrphan } },
    { name: 'waypoint without a healthy endpoint: refused', dst: { address: '10.96.0.103', port: 80 }, src: client, want: { kind: 'refuse', reason: 'waypoint 10.96.0.102:15008: no healthy endpoint of waypoint-sick.shop.svc.cluster.local on port 15008', service: svcBehindSick } },
    { name: 'waypoint Service without the HBONE port: refused', dst: { address: '10.96.0.105', port: 80 }, src: client, want: { kind: 'refuse', reason: 'waypoint 10.96.0.104:15008: no healthy endpoint of waypoint-noport.shop.svc.cluster.local on port 15008', service: svcBehindNoPort } },
  ];

  it.each(cases)('$name', (c) => {
    expect(planOutbound(state, c.dst, () => c.pick ?? 0, c.src)).toEqual(c.want);
  });

  it('a waypoint is named by identity, and the plan carries the original destination, not the waypoint', () => {
    const p = planOutbound(state, { address: '10.244.2.70', port: 9000 }, () => 0, client);
    expect(p.kind === 'hbone' && p.dstIdentity).toBe(WP_ID);
    expect(p.kind === 'hbone' && p.target).toEqual({ address: '10.244.2.70', port: 9000 });
    // The waypoint is resolved in the snapshot the connection holds: once it is gone, refused.
    const gone = state.with({ services: [[`shop/${svcWp.hostname}`, undefined]] });
    expect(planOutbound(gone, { address: '10.244.2.70', port: 9000 }, () => 0, client)).toMatchObject({ kind: 'refuse' });
  });
});
