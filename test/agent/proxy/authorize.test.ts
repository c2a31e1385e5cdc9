// The inbound decision: the destination must be the pod, known to the mesh, and never one of the
// agent's own ports (a self-call would loop under iptables capture or nest HBONE under eBPF).
import { describe, expect, it } from 'vitest';
import type { AuthorizationPolicy, GatewayAddress, Match, Service, Workload } from '../../../src/api/mesh.ts';
import type { SpiffeId } from '../../../src/api/spiffe.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { DEFAULT_AGENT_PORTS, authorize, ownAddressRefusal } from '../../../src/agent/proxy/authorize.ts';
import type { ProxyPod } from '../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';

const IP = '10.244.1.7';
const workload: Workload = {
  uid: 'u1', name: 'echo', namespace: 'mesh', addresses: [IP], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-1', canonicalName: 'echo', canonicalRevision: 'latest', workloadType: 'POD', workloadName: 'echo',
  services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
};
const state = MeshState.empty().with({ workloads: [['u1', workload]] });
const ctx = (agentPorts?: Set<number>) => ({ state: () => state, engine: engineCache('istio-system'), agentPorts }) as unknown as ProxyContext;
const pod = { uid: 'u1', namespace: 'mesh', name: 'echo', serviceAccount: 'default', ips: [IP] } as ProxyPod;
const src = { ip: '10.244.0.9', identity: { trustDomain: 'cluster.local', namespace: 'mesh', serviceAccount: 'client' } };

describe('inbound authorize', () => {
  it('allows the pod on an application port', () => {
    expect(authorize(ctx(), pod, { address: IP, port: 8080 }, src)).toMatchObject({ ok: true });
  });

  it.each([15001, 15006, 15008, 15000, 15020, 15021])('refuses the agent port %i as a destination, before any policy', (port) => {
    const v = authorize(ctx(), pod, { address: IP, port }, src);
    expect(v).toMatchObject({ ok: false });
    expect(v.ok ? '' : v.reason).toContain('self-call');
    expect(v.ok ? undefined : v.policy).toBeUndefined(); // NR / 400, not a policy DENY
  });

  it('uses the ports the agent was started with', () => {
    const moved = new Set([15001, 15006, 15008, 9000]);
    expect(authorize(ctx(moved), pod, { address: IP, port: 9000 }, src)).toMatchObject({ ok: false });
    expect(authorize(ctx(moved), pod, { address: IP, port: 15020 }, src)).toMatchObject({ ok: true });
    expect([...DEFAULT_AGENT_PORTS].sort()).toEqual([15000, 15001, 15006, 15008, 15020, 15021]);
  });

  it('still refuses destinations that are not the pod', () => {
    expect(authorize(ctx(), pod, { address: '10.244.1.8', port: 8080 }, src)).toMatchObject({ ok: false });
  });
});

// Table-driven, as ztunnel's build_request tests: one real mesh state (workloads, policies as the
// control plane publishes them), the real engine, and for each case the exact verdict.
describe('inbound authorize, decision table', () => {
  const wl = (name: string, namespace: string, addresses: string[], authorizationPolicies: string[] = []): Workload => ({
    uid: `Kubernetes//Pod/${namespace}/${name}`, name, namespace, addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: name,
    node: 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: {}, authorizationPolicies, status: 'HEALTHY', clusterId: 'Kubernetes',
  });
  const policy = (namespace: string, name: string, scope: AuthorizationPolicy['scope'], action: AuthorizationPolicy['action'], match: Match): AuthorizationPolicy => ({
    name, namespace, scope, action, rules: [{ clauses: [{ matches: [match] }] }],
  });
  const STRICT = 'istio-system/istio_converted_static_strict';
  const policies: AuthorizationPolicy[] = [
    // PeerAuthentication STRICT, as the control plane converts it: no peer identity, denied.
    policy('istio-system', 'istio_converted_static_strict', 'WORKLOAD_SELECTOR', 'DENY', { notPrincipals: [{ presence: {} }] }),
    policy('shop', 'allow-buyer', 'WORKLOAD_SELECTOR', 'ALLOW', { principals: [{ exact: 'cluster.local/ns/shop/sa/buyer' }], destinationPorts: [8080] }),
    policy('shop', 'deny-intruder', 'NAMESPACE', 'DENY', { principals: [{ exact: 'cluster.local/ns/evil/sa/intruder' }] }),
    policy('shop', 'audit-8080', 'NAMESPACE', 'AUDIT', { destinationPorts: [8080] }),
    policy('open', 'deny-quarantine', 'NAMESPACE', 'DENY', { sourceIps: [{ address: '10.244.66.0', length: 24 }] }),
  ];
  // cart: STRICT, ALLOW only the buyer on 8080 (dual stack). echo: no policy of its own. ghost:
  // names a policy the snapshot lacks. 10.244.3.9 belongs to an enrolled pod the state does not know yet.
  const cart = wl('cart', 'shop', ['10.244.3.2', 'fd00:10:244:3::2'], [STRICT, 'shop/allow-buyer']);
  const echo = wl('echo', 'open', ['10.244.3.3']);
  const ghost = wl('ghost', 'open', ['10.244.3.4'], ['open/gone']);
  const mesh = MeshState.empty().with({
    workloads: [cart, echo, ghost].map((w) => [w.uid, w] as [string, Workload]),
    policies: policies.map((p) => [`${p.namespace}/${p.name}`, p] as [string, AuthorizationPolicy]),
  });
  const deps = { state: () => mesh, engine: engineCache('istio-system') };
  const podOf = (w: Workload) => ({ namespace: w.namespace, name: w.name, ips: w.addresses });
  const id = (namespace: string, serviceAccount: string) => ({ trustDomain: 'cluster.local', namespace, serviceAccount });
  const buyer = { identity: id('shop', 'buyer'), ip: '10.244.1.5' };

  type Case = { name: string; pod: { namespace: string; name: string; ips: string[] }; dst: { address: string; port: number }; src: { identity?: SpiffeId; ip: string }; agentPorts?: Set<number>; want: unknown };
  const cases: Case[] = [
    { name: 'the pod address on 15006 (its inbound plaintext listener)', pod: podOf(cart), dst: { address: '10.244.3.2', port: 15006 }, src: buyer, want: { ok: false, reason: "destination port 15006 is the agent's own (self-call refused)" } },
    { name: 'the pod address on 15008 (nested HBONE)', pod: podOf(cart), dst: { address: '10.244.3.2', port: 15008 }, src: buyer, want: { ok: false, reason: "destination port 15008 is the agent's own (self-call refused)" } },
    { name: 'the outbound listener 15001', pod: podOf(echo), dst: { address: '10.244.3.3', port: 15001 }, src: { ip: '10.244.1.5' }, want: { ok: false, reason: "destination port 15001 is the agent's own (self-call refused)" } },
    { name: 'an admin port, even with no policy anywhere', pod: podOf(echo), dst: { address: '10.244.3.3', port: 15020 }, src: { ip: '10.244.1.5' }, want: { ok: false, reason: "destination port 15020 is the agent's own (self-call refused)" } },
    { name: 'an agent port before the destination check', pod: podOf(echo), dst: { address: '10.244.3.2', port: 15021 }, src: buyer, want: { ok: false, reason: "destination port 15021 is the agent's own (self-call refused)" } },
    { name: 'a moved admin port', pod: podOf(echo), dst: { address: '10.244.3.3', port: 9901 }, src: buyer, agentPorts: new Set([15001, 15006, 15008, 9901]), want: { ok: false, reason: "destination port 9901 is the agent's own (self-call refused)" } },
    { name: 'the default admin port once moved away', pod: podOf(echo), dst: { address: '10.244.3.3', port: 15000 }, src: buyer, agentPorts: new Set([15001, 15006, 15008, 9901]), want: { ok: true, dst: echo, audit: [] } },
    { name: 'the address of another pod', pod: podOf(echo), dst: { address: '10.244.3.2', port: 8080 }, src: buyer, want: { ok: false, reason: 'destination 10.244.3.2 is not pod open/echo' } },
    { name: 'an enrolled pod the mesh state does not know yet', pod: { namespace: 'open', name: 'new', ips: ['10.244.3.9'] }, dst: { address: '10.244.3.9', port: 8080 }, src: buyer, want: { ok: false, reason: 'destination 10.244.3.9 is not (yet) in the mesh state' } },
    { name: 'no policy applies: allowed', pod: podOf(echo), dst: { address: '10.244.3.3', port: 8080 }, src: { ip: '10.244.1.5' }, want: { ok: true, dst: echo, audit: [] } },
    { name: 'a DENY on the source address', pod: podOf(echo), dst: { address: '10.244.3.3', port: 8080 }, src: { ip: '10.244.66.7' }, want: { ok: false, reason: 'denied by authorization policy', policy: 'open/deny-quarantine', dst: echo } },
    { name: 'the ALLOW matches: allowed, AUDIT reported', pod: podOf(cart), dst: { address: '10.244.3.2', port: 8080 }, src: buyer, want: { ok: true, dst: cart, audit: ['shop/audit-8080'] } },
    { name: 'the ALLOW matches over IPv6', pod: podOf(cart), dst: { address: 'fd00:10:244:3::2', port: 8080 }, src: { identity: id('shop', 'buyer'), ip: 'fd00:10:244:1::5' }, want: { ok: true, dst: cart, audit: ['shop/audit-8080'] } },
    { name: 'a port the ALLOW does not name', pod: podOf(cart), dst: { address: '10.244.3.2', port: 9090 }, src: buyer, want: { ok: false, reason: 'denied by authorization policy', policy: 'no ALLOW policy matched: shop/allow-buyer', dst: cart } },
    { name: 'another identity than the ALLOW names', pod: podOf(cart), dst: { address: '10.244.3.2', port: 8080 }, src: { identity: id('shop', 'browser'), ip: '10.244.1.6' }, want: { ok: false, reason: 'denied by authorization policy', policy: 'no ALLOW policy matched: shop/allow-buyer', dst: cart } },
    { name: 'a namespace DENY is the deciding policy, before the ALLOW that does not match', pod: podOf(cart), dst: { address: '10.244.3.2', port: 8080 }, src: { identity: id('evil', 'intruder'), ip: '10.244.1.7' }, want: { ok: false, reason: 'denied by authorization policy', policy: 'shop/deny-intruder', dst: cart } },
    { name: 'plaintext to a STRICT workload', pod: podOf(cart), dst: { address: '10.244.3.2', port: 8080 }, src: { ip: '10.244.1.5' }, want: { ok: false, reason: 'denied by authorization policy', policy: STRICT, dst: cart } },
    { name: 'a policy the snapshot lacks', pod: podOf(ghost), dst: { address: '10.244.3.4', port: 8080 }, src: buyer, want: { ok: false, reason: 'denied by authorization policy', policy: 'missing policy: open/gone', dst: ghost } },
  ];

  it.each(cases)('$name', (c) => {
    expect(authorize({ ...deps, agentPorts: c.agentPorts }, c.pod, c.dst, c.src)).toEqual(c.want);
  });
});

// Plaintext on 15006 coming from the pod itself is the agent's own dial looping back (capture
// leaves a pod's own connections alone): refused before authorization, whatever the destination.
describe('inbound plaintext from the pod\'s own address', () => {
  const pod = { ips: ['10.244.3.2', 'fd00:10:244:3::2'] };
  it.each([
    { src: '10.244.3.2', want: "connection from the pod's own address 10.244.3.2 was not captured (self-call refused)" },
    { src: 'fd00:10:244:3::2', want: "connection from the pod's own address fd00:10:244:3::2 was not captured (self-call refused)" },
    { src: '10.244.3.20', want: undefined },
    { src: '127.0.0.1', want: undefined },
  ])('from $src', ({ src, want }) => {
    expect(ownAddressRefusal(pod, src)).toBe(want);
  });
});

// A workload with a waypoint of its own (waypoint-for workload or all) takes connections only from
// that waypoint (identity and address), or from the waypoint of a Service it backs; a workload behind
// a service waypoint only takes direct pod-IP connections, as in Istio. The same decision serves
// HBONE (identity and peer address), plaintext on 15006 (no identity) and the node-local fast path
// (the source pod's identity and address), which all call authorize().
describe('inbound authorize, waypoints', () => {
  const key = (name: string) => `shop/${name}.shop.svc.cluster.local`;
  const HBONE = [{ servicePort: 15008, targetPort: 15008 }];
  const wl = (name: string, addresses: string[], o: { sa?: string; services?: Workload['services']; waypoint?: GatewayAddress; policies?: string[] } = {}): Workload => ({
    uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: o.sa ?? name,
    node: 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: o.policies ?? [],
    status: 'HEALTHY', clusterId: 'Kubernetes', ...(o.waypoint ? { waypoint: o.waypoint } : {}),
  });
  const service = (name: string, addresses: string[], ports: Service['ports'], waypoint?: GatewayAddress): Service => ({
    name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, addresses, ports, subjectAltNames: [], ...(waypoint ? { waypoint } : {}),
  });
  const gw = (name: string): GatewayAddress => ({ hostname: { namespace: 'shop', hostname: `${name}.shop.svc.cluster.local` }, hboneMtlsPort: 15008 });
  // Two waypoints: "waypoint" (a pod, dual stack) and "svc-waypoint", each under its own service account.
  const wp = wl('waypoint-0', ['10.244.1.50', 'fd00:10:244:1::50'], { sa: 'waypoint', services: { [key('waypoint')]: HBONE } });
  const swp = wl('svc-waypoint-0', ['10.244.1.51'], { sa: 'svc-waypoint', services: { [key('svc-waypoint')]: HBONE } });
  // job: waypoint-for=workload, and backs "batch", whose Service has the other waypoint.
  const job = wl('job', ['10.244.2.70', 'fd00:10:244:2::70'], { waypoint: gw('waypoint'), services: { [key('batch')]: [{ servicePort: 80, targetPort: 8080 }] } });
  // api: waypoint-for=service only. solo: waypoint named by a pod address. lost: waypoint unknown.
  const api = wl('api', ['10.244.2.60'], { services: { [key('api')]: [{ servicePort: 80, targetPort: 8080 }] } });
  const solo = wl('solo', ['10.244.2.90'], { waypoint: { address: '10.244.1.50', network: '', hboneMtlsPort: 15008 } });
  const lost = wl('lost', ['10.244.2.100'], { waypoint: gw('gone') });
  // guarded: behind the waypoint, with its own policy denying the waypoint on port 9090.
  const guarded = wl('guarded', ['10.244.2.110'], { waypoint: gw('waypoint'), policies: ['shop/deny-9090'] });
  const mesh = MeshState.empty().with({
    workloads: [wp, swp, job, api, solo, lost, guarded].map((w) => [w.uid, w] as [string, Workload]),
    services: [
      service('waypoint', ['10.96.0.50'], HBONE), service('svc-waypoint', ['10.96.0.51'], HBONE),
      service('batch', ['10.96.0.70'], [{ servicePort: 80, targetPort: 8080 }], gw('svc-waypoint')),
      service('api', ['10.96.0.60'], [{ servicePort: 80, targetPort: 8080 }], gw('waypoint')),
    ].map((s) => [`shop/${s.hostname}`, s] as [string, Service]),
    policies: [['shop/deny-9090', { name: 'deny-9090', namespace: 'shop', scope: 'WORKLOAD_SELECTOR', action: 'DENY', rules: [{ clauses: [{ matches: [{ destinationPorts: [9090] }] }] }] }]],
  });
  const deps = { state: () => mesh, engine: engineCache('istio-system') };
  const podOf = (w: Workload) => ({ namespace: w.namespace, name: w.name, ips: w.addresses });
  const id = (serviceAccount: string) => ({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount });
  const fromWp = { identity: id('waypoint'), ip: '10.244.1.50' };
  const refused = (w: Workload, name: string) => ({ ok: false, reason: `shop/${w.name} is reached only through its waypoint ${name}`, policy: `waypoint ${name}`, dst: w });
  const WP = 'shop/waypoint.shop.svc.cluster.local:15008';

  type Case = { name: string; dst: Workload; port?: number; src: { identity?: SpiffeId; ip: string }; want: unknown };
  const cases: Case[] = [
    { name: 'from its waypoint: allowed', dst: job, src: fromWp, want: { ok: true, dst: job, audit: [] } },
    { name: 'from its waypoint over IPv6', dst: job, src: { identity: id('waypoint'), ip: 'fd00:10:244:1::50' }, want: { ok: true, dst: job, audit: [] } },
    { name: 'from the waypoint of a Service it backs: allowed', dst: job, src: { identity: id('svc-waypoint'), ip: '10.244.1.51' }, want: { ok: true, dst: job, audit: [] } },
    { name: 'HBONE from a client that skipped the waypoint: refused', dst: job, src: { identity: id('client'), ip: '10.244.1.5' }, want: refused(job, WP) },
    { name: 'plaintext (no identity), even from the waypoint\'s address: refused', dst: job, src: { ip: '10.244.1.50' }, want: refused(job, WP) },
    { name: 'the waypoint\'s identity from another address: refused', dst: job, src: { identity: id('waypoint'), ip: '10.244.1.99' }, want: refused(job, WP) },
    { name: 'the waypoint\'s address with another identity: refused', dst: job, src: { identity: id('client'), ip: '10.244.1.50' }, want: refused(job, WP) },
    { name: 'another trust domain with the waypoint\'s names: refused', dst: job, src: { identity: { trustDomain: 'evil.local', namespace: 'shop', serviceAccount: 'waypoint' }, ip: '10.244.1.50' }, want: refused(job, WP) },
    { name: 'service waypoint only: a direct pod-IP connection is allowed', dst: api, src: { identity: id('client'), ip: '10.244.1.5' }, want: { ok: true, dst: api, audit: [] } },
    { name: 'waypoint named by a pod address: from that pod, allowed', dst: solo, src: fromWp, want: { ok: true, dst: solo, audit: [] } },
    { name: 'waypoint named by a pod address: from a client, refused', dst: solo, src: { identity: id('client'), ip: '10.244.1.5' }, want: refused(solo, '10.244.1.50:15008') },
    { name: 'a waypoint the state cannot resolve: refused, whoever asks', dst: lost, src: fromWp, want: refused(lost, 'shop/gone.shop.svc.cluster.local:15008') },
    { name: 'from the waypoint, the workload\'s own policy still applies', dst: guarded, port: 9090, src: fromWp, want: { ok: false, reason: 'denied by authorization policy', policy: 'shop/deny-9090', dst: guarded } },
    { name: 'from the waypoint, a port the policy allows', dst: guarded, src: fromWp, want: { ok: true, dst: guarded, audit: [] } },
  ];

  it.each(cases)('$name', (c) => {
    expect(authorize(deps, podOf(c.dst), { address: c.dst.addresses[c.src.ip.includes(':') ? 1 : 0]!, port: c.port ?? 8080 }, c.src)).toEqual(c.want);
  });
});
