// The L7 traffic model as plain data, without Envoy: which clusters a service port has (whole
// service and DestinationRule subsets, endpoints, DNS), which routes (matches per port, splits,
// retry default, Gateway API over VirtualService), the problems of unresolvable destinations and
// unknown hosts, and reuse of unchanged namespaces across builds.
import { describe, expect, it } from 'vitest';
import { LastGoodStore } from '../../../../src/control/config/config-store.ts';
import { DEFAULT_RETRY, type PortRoute } from '../../../../src/control/model/networking/port-routes.ts';
import { buildTrafficModel, TrafficModelBuilder, type PortTraffic, type TrafficModel } from '../../../../src/control/model/networking/traffic-model.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import type { KObject } from '../../../../src/kube/objects.ts';

const svc = (ns: string, name: string, ports: number[]): KObject =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { selector: { app: name }, clusterIP: '10.96.0.1', ports: ports.map((port) => ({ port, targetPort: 'grpc' })) } }) as KObject;
const pod = (ns: string, name: string, ip: string, labels: Record<string, string>, ready = true): KObject =>
  ({
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels },
    spec: { containers: [{ name: 'c', image: 'app', ports: [{ name: 'grpc', containerPort: 9000 }] }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  }) as KObject;
const istio = (ns: string, kind: string, name: string, spec: unknown): KObject => ({ apiVersion: 'networking.istio.io/v1', kind, metadata: { name, namespace: ns }, spec }) as KObject;
const gateway = (ns: string, kind: string, name: string, spec: unknown): KObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind, metadata: { name, namespace: ns }, spec }) as KObject;
const fqdn = (name: string, ns = 'a') => `${name}.${ns}.svc.cluster.local`;

const portOf = (m: TrafficModel, host: string, port: number): PortTraffic => {
  for (const ns of m.namespaces.values()) for (const p of ns.ports) if (p.host === host && p.port === port) return p;
  throw new Error(`no ${host}:${port}`);
};
/** A route as one line: name, match, clusters with weights. */
const show = (r: PortRoute) =>
  `${r.name} ${r.match.path ? JSON.stringify(r.match.path) : '*'}${r.match.headers.map((h) => ` ${h.name}`).join('')} -> ${r.action.clusters.map((c) => `${c.host}:${c.port}${c.subset ? `/${c.subset}` : ''}@${c.weight}`).join(' ')}`;

const reviews = [
  svc('a', 'reviews', [80, 8080]),
  pod('a', 'r1', '10.0.0.1', { app: 'reviews', version: 'v1' }),
  pod('a', 'r2', '10.0.0.2', { app: 'reviews', version: 'v2' }),
  pod('a', 'r3', '10.0.0.3', { app: 'reviews', version: 'v2' }, false),
  istio('a', 'DestinationRule', 'reviews', { host: 'reviews', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } }, subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } } }] }),
];

describe('traffic model: clusters', () => {
  it("has the whole service and one cluster per subset (its policy merged over the rule's), with the ready endpoints its labels select", () => {
    const p = portOf(buildTrafficModel(reviews, DEFAULT_MESH), fqdn('reviews'), 80);
    expect(p.clusters.map((c) => ({ subset: c.subset, lb: c.policy.lb, endpoints: c.endpoints.map((e) => `${e.address}:${e.port}`), dns: c.dns }))).toEqual([
      { subset: undefined, lb: 'RANDOM', endpoints: ['10.0.0.1:9000', '10.0.0.2:9000'], dns: undefined },
      { subset: 'v1', lb: 'RANDOM', endpoints: ['10.0.0.1:9000'], dns: undefined },
      { subset: 'v2', lb: 'LEAST_REQUEST', endpoints: ['10.0.0.2:9000'], dns: undefined },
    ]);
  });

  it('gives a DNS ServiceEntry a name to resolve instead of endpoints, and a passthrough entry no host', () => {
    const m = buildTrafficModel([
      istio('a', 'ServiceEntry', 'ext', { hosts: ['api.example.com'], resolution: 'DNS', ports: [{ number: 443, name: 'grpc', targetPort: 8443 }] }),
      istio('a', 'ServiceEntry', 'pass', { hosts: ['pass.example.com'], resolution: 'NONE', ports: [{ number: 80, name: 'http' }] }),
    ], DEFAULT_MESH);
    expect(portOf(m, 'api.example.com', 443).clusters).toEqual([{ host: 'api.example.com', port: 443, subset: undefined, policy: {}, dns: { address: 'api.example.com', port: 8443 }, endpoints: [] }]);
    expect([...m.namespaces.values()].flatMap((n) => n.hosts.map((h) => h.host))).toEqual(['api.example.com']);
  });
});

describe('traffic model: routes', () => {
  const vs = istio('a', 'VirtualService', 'reviews', {
    hosts: ['reviews'],
    http: [
      { name: 'canary', match: [{ headers: { 'x-canary': { exact: '1' } } }, { uri: { prefix: '/admin' }, port: 8080 }], route: [{ destination: { host: 'reviews', subset: 'v2' } }], retries: { attempts: 0 } },
      { name: 'split', route: [{ destination: { host: 'reviews', subset: 'v1' }, weight: 90 }, { destination: { host: 'reviews', subset: 'v2' }, weight: 10 }, { destination: { host: 'ratings' }, weight: 0 }], timeout: '2s' },
    ],
  });
  const m = buildTrafficModel([...reviews, vs, svc('a', 'ratings', [9080])], DEFAULT_MESH);

  it.each([
    [80, ['canary * x-canary -> reviews.a.svc.cluster.local:80/v2@100', 'split * -> reviews.a.svc.cluster.local:80/v1@90 reviews.a.svc.cluster.local:80/v2@10']],
    [8080, ['canary * x-canary -> reviews.a.svc.cluster.local:8080/v2@100', 'canary {"prefix":"/admin"} -> reviews.a.svc.cluster.local:8080/v2@100', 'split * -> reviews.a.svc.cluster.local:8080/v1@90 reviews.a.svc.cluster.local:8080/v2@10']],
  ])('port %i: one route per match that applies, zero-weight destinations left out', (port, want) => {
    expect(portOf(m, fqdn('reviews'), port).routes.map(show)).toEqual(want);
  });

  it('fills in the mesh retry default unless retries are off, and keeps the timeout', () => {
    const [canary, , split] = portOf(m, fqdn('reviews'), 8080).routes;
    expect(canary!.action.retry).toBeUndefined();
    expect(split!.action).toMatchObject({ timeoutMs: 2000, retry: { retryOn: DEFAULT_RETRY.retryOn, attempts: DEFAULT_RETRY.attempts } });
  });

  it('gives a port without rules one default route to the whole service', () => {
    expect(portOf(m, fqdn('ratings'), 9080).routes).toEqual([
      { name: 'default', match: { headers: [] }, action: { clusters: [{ host: fqdn('ratings'), port: 9080, subset: undefined, weight: 1 }], timeoutMs: undefined, retry: { ...DEFAULT_RETRY, perTryTimeoutMs: undefined } } },
    ]);
  });

  it('takes the port of a single-port destination and reports one it cannot choose', () => {
    const out = buildTrafficModel([...reviews, svc('a', 'ratings', [9080]), svc('b', 'front', [80]), istio('b', 'VirtualService', 'front', { hosts: ['front'], http: [{ route: [{ destination: { host: fqdn('ratings') }, weight: 50 }, { destination: { host: fqdn('reviews') }, weight: 50 }] }] })], DEFAULT_MESH);
    expect(portOf(out, fqdn('front', 'b'), 80).routes.map(show)).toEqual(['spec.http[0] * -> ratings.a.svc.cluster.local:9080@50 reviews.a.svc.cluster.local:80@50']);
    expect(out.namespaces.get('b')!.problems).toEqual([{ kind: 'VirtualService', namespace: 'b', name: 'front', field: 'spec', reason: `destination ${fqdn('reviews')} needs a port (it has 80, 8080); using 80` }]);
    expect(out.namespaces.get('a')!.problems).toEqual([]);
  });

  it('reports routing for a host that does not exist, and keeps it', () => {
    const out = buildTrafficModel([istio('a', 'VirtualService', 'ghost', { hosts: ['ghost'], http: [{ route: [{ destination: { host: 'ghost' } }] }] })], DEFAULT_MESH);
    expect(out.routingProblems.map((p) => `${p.name}: ${p.reason}`)).toEqual([`ghost: host ${fqdn('ghost')} is not a known Service or ServiceEntry`]);
  });

  it('prefers Gateway API routes over a VirtualService, most specific match first', () => {
    const hr = gateway('a', 'HTTPRoute', 'hr', {
      parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 80 }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/a' } }], backendRefs: [{ name: 'reviews', port: 80 }] },
        { matches: [{ path: { type: 'Exact', value: '/a/b' } }], backendRefs: [{ name: 'ratings', port: 9080 }] },
      ],
    });
    const out = buildTrafficModel([...reviews, vs, svc('a', 'ratings', [9080]), hr], DEFAULT_MESH);
    expect(portOf(out, fqdn('reviews'), 80).routes.map((r) => JSON.stringify(r.match.path))).toEqual(['{"exact":"/a/b"}', '{"prefix":"/a","segments":true}']);
    // The HTTPRoute names port 80 only: 8080 keeps the VirtualService.
    expect(portOf(out, fqdn('reviews'), 8080).routes.map((r) => r.name)).toEqual(['canary', 'canary', 'split']);
  });
});

describe('traffic model: incremental', () => {
  it('reuses namespaces nothing changed in, and rebuilds everything on a routing change', () => {
    const store = new LastGoodStore();
    for (const o of [...reviews, svc('b', 'front', [80]), pod('b', 'f1', '10.1.0.1', { app: 'front' })]) store.put(o);
    const b = new TrafficModelBuilder(DEFAULT_MESH);
    const m0 = b.build(store.snapshot([]));
    const m1 = b.build(store.snapshot([]));
    expect(m1.namespaces.get('a')).toBe(m0.namespaces.get('a'));
    expect(m1.namespaces.get('b')).toBe(m0.namespaces.get('b'));

    store.put(pod('b', 'f2', '10.1.0.2', { app: 'front' }));
    const m2 = b.build(store.snapshot([]));
    expect(m2.namespaces.get('a')).toBe(m1.namespaces.get('a'));
    expect(m2.namespaces.get('b')).not.toBe(m1.namespaces.get('b'));
    expect(portOf(m2, fqdn('front', 'b'), 80).clusters[0]!.endpoints.map((e) => e.address)).toEqual(['10.1.0.1', '10.1.0.2']);

    store.put(istio('b', 'VirtualService', 'front', { hosts: ['front'], http: [{ route: [{ destination: { host: fqdn('reviews'), port: { number: 8080 } } }] }] }));
    const m3 = b.build(store.snapshot([]));
    expect(m3.namespaces.get('a')).not.toBe(m2.namespaces.get('a'));
    expect(portOf(m3, fqdn('front', 'b'), 80).routes.map(show)).toEqual(['spec.http[0] * -> reviews.a.svc.cluster.local:8080@100']);
    expect(m3).toEqual(buildTrafficModel([...store.keys()].map((k) => store.get(k)!), DEFAULT_MESH));
  });
});
