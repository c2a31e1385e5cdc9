// The control plane builds each snapshot from what it built for the previous one. Through a run of
// edits of every kind that matters (pods, Services, AuthorizationPolicies, PeerAuthentications in a
// namespace and in the root namespace, routing objects, ServiceEntries, waypoints and the labels
// that enroll in them, deletions, an invalid edit), the incremental result must equal a build from scratch, and what an edit did not touch
// must be reused, not rebuilt.
import { describe, expect, it } from 'vitest';
import { Analyzer, analyze } from '../../src/control/analyze.ts';
import { ConfigSnapshot, LastGoodStore } from '../../src/control/config/config-store.ts';
import { DEFAULT_MESH } from '../../src/control/model/networking/workloads.ts';
import { EnvoyPublisher } from '../../src/control/xds/envoy/build.ts';
import { ResourceStore } from '../../src/control/xds/resources.ts';
import { WorkloadApiPublisher } from '../../src/control/xds/workload-api.ts';
import { keyOf, type KObject } from '../../src/kube/objects.ts';

const pod = (ns: string, name: string, app: string, o: { ready?: boolean; node?: string; sa?: string; ip: string }): KObject =>
  ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app }, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
    spec: { nodeName: o.node ?? 'node-0', serviceAccountName: o.sa ?? app, containers: [{ name: 'app', image: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: o.ip, conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
  }) as KObject;
const service = (ns: string, name: string, ports: number[] = [80]): KObject =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: `10.96.${ns.length}.${name.length}`, selector: { app: name }, ports: ports.map((p) => ({ port: p, targetPort: 'http' })) } }) as KObject;
const istio = (group: string, kind: string, ns: string, name: string, spec: unknown): KObject =>
  ({ apiVersion: `${group}.istio.io/v1`, kind, metadata: { name, namespace: ns, creationTimestamp: '2026-01-01T00:00:00Z' }, spec }) as KObject;

const namespace = (name: string, labels?: Record<string, string>): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } });
const gateway = (ns: string, name: string, wpFor: string, from?: string): KObject =>
  ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: ns, labels: { 'istio.io/waypoint-for': wpFor } },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE', ...(from ? { allowedRoutes: { namespaces: { from } } } : {}) }] },
  }) as KObject;

/** A config as sources hand it over: edited objects are new objects, the others the same ones. */
class Config {
  private readonly store = new LastGoodStore();
  constructor(list: KObject[]) {
    for (const o of list) this.put(o);
  }
  put(o: KObject) {
    this.store.put(o);
  }
  remove(kind: string, ns: string, name: string) {
    this.store.remove(keyOf({ kind, metadata: { name, namespace: ns } }));
  }
  snapshot() {
    return this.store.snapshot([]);
  }
  /** The same configuration as new objects, for a build from scratch that can share nothing. */
  fresh() {
    return ConfigSnapshot.of(structuredClone([...this.snapshot().objects]));
  }
}

const byName = <T>(list: readonly T[], name: (x: T) => string) => [...list].sort((a, b) => (name(a) < name(b) ? -1 : 1));

/** The parts of an analysis two builds must agree on (Envoy bodies as bytes). */
function comparable(a: ReturnType<typeof analyze>) {
  return {
    workloads: byName(a.model.workloads, (w) => w.uid),
    services: byName(a.model.services, (x) => x.hostname),
    policies: byName(a.model.policies, (p) => `${p.namespace}/${p.name}`),
    problems: a.problems,
    // Which identities each node may obtain from the CA.
    issuable: ['node-0', 'node-1'].flatMap((node) => ['shop/web', 'shop/db', 'bank/ledger', 'bank/audit'].map((sa) => `${node} ${sa} ${a.model.canIssue(node, { trustDomain: 'cluster.local', namespace: sa.split('/')[0]!, serviceAccount: sa.split('/')[1]! })}`)),
    envoy: Object.fromEntries([...a.envoy.resources].map(([t, m]) => [t, Object.fromEntries([...m].sort(([x], [y]) => (x < y ? -1 : 1)).map(([n, b]) => [n, Buffer.from(b).toString('base64')]))])),
  };
}

describe('incremental analysis', () => {
  it('equals a build from scratch after every kind of edit', () => {
    const cfg = new Config([
      service('shop', 'web'),
      service('shop', 'db', [5432]),
      service('bank', 'ledger'),
      ...[0, 1, 2].map((i) => pod('shop', `web-${i}`, 'web', { ip: `10.244.0.${10 + i}`, node: `node-${i % 2}` })),
      pod('shop', 'db-0', 'db', { ip: '10.244.0.20' }),
      ...[0, 1].map((i) => pod('bank', `ledger-${i}`, 'ledger', { ip: `10.244.1.${10 + i}`, node: 'node-1' })),
      istio('security', 'AuthorizationPolicy', 'shop', 'db-from-web', { selector: { matchLabels: { app: 'db' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }] }),
    ]);
    const incremental = new Analyzer(DEFAULT_MESH);
    // What xDS serves: the incremental builds published as patches, against a fresh store.
    const store = new ResourceStore();
    const publishers = [new WorkloadApiPublisher(store), new EnvoyPublisher(store)] as const;
    const served = (st: ResourceStore) => Object.fromEntries(st.types().map((t) => [t, Object.fromEntries([...st.get(t)].map(([n, r]) => [n, r.version]).sort(([x], [y]) => (x! < y! ? -1 : 1)))]));
    const edits: [string, () => void][] = [
      ['initial', () => {}],
      ['a pod relabelled', () => cfg.put({ ...pod('shop', 'web-1', 'web', { ip: '10.244.0.11' }), metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web', version: 'v2' } } } as KObject)],
      ['a pod not ready', () => cfg.put(pod('shop', 'web-2', 'web', { ip: '10.244.0.12', ready: false }))],
      ['a Service added', () => cfg.put(service('bank', 'audit'))],
      ['a pod for it', () => cfg.put(pod('bank', 'audit-0', 'audit', { ip: '10.244.1.30' }))],
      ['Service ports changed', () => cfg.put(service('shop', 'web', [80, 8080]))],
      ['a namespace-wide DENY', () => cfg.put(istio('security', 'AuthorizationPolicy', 'bank', 'no-shop', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] }))],
      ['a root-namespace selector policy', () => cfg.put(istio('security', 'AuthorizationPolicy', 'istio-system', 'ledger-audit', { selector: { matchLabels: { app: 'ledger' } }, action: 'AUDIT', rules: [{}] }))],
      ['mesh-wide STRICT', () => cfg.put(istio('security', 'PeerAuthentication', 'istio-system', 'default', { mtls: { mode: 'STRICT' } }))],
      ['a workload port exception', () => cfg.put(istio('security', 'PeerAuthentication', 'bank', 'ledger-metrics', { selector: { matchLabels: { app: 'ledger' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { 9090: { mode: 'PERMISSIVE' } } }))],
      ['a VirtualService across namespaces', () => cfg.put(istio('networking', 'VirtualService', 'shop', 'split', { hosts: ['ledger.bank.svc.cluster.local'], http: [{ route: [{ destination: { host: 'ledger.bank.svc.cluster.local', subset: 'v1' }, weight: 90 }, { destination: { host: 'web', port: { number: 80 } }, weight: 10 }] }] }))],
      ['a DestinationRule with subsets', () => cfg.put(istio('networking', 'DestinationRule', 'bank', 'ledger', { host: 'ledger', subsets: [{ name: 'v1', labels: { app: 'ledger' } }] }))],
      ['a pod change under the routes', () => cfg.put(pod('bank', 'ledger-1', 'ledger', { ip: '10.244.1.99', node: 'node-1' }))],
      ['a ServiceEntry selecting pods', () => cfg.put(istio('networking', 'ServiceEntry', 'shop', 'legacy', { hosts: ['legacy.example.com'], ports: [{ number: 80, name: 'http', targetPort: 8080 }], resolution: 'STATIC', workloadSelector: { labels: { app: 'web' } } }))],
      ['a pod the entry selects', () => cfg.put(pod('shop', 'web-3', 'web', { ip: '10.244.0.13' }))],
      ['a waypoint Gateway', () => cfg.put(gateway('shop', 'wp', 'all'))],
      ['its Service', () => cfg.put(service('shop', 'wp', [15008]))],
      ['a namespace labelled to use it', () => cfg.put(namespace('shop', { 'istio.io/use-waypoint': 'wp' }))],
      ['a pod opting out', () => cfg.put({ ...pod('shop', 'web-1', 'web', { ip: '10.244.0.11' }), metadata: { name: 'web-1', namespace: 'shop', labels: { app: 'web', 'istio.io/use-waypoint': 'none' } } } as KObject)],
      ['another namespace asking for it (refused)', () => cfg.put(namespace('bank', { 'istio.io/use-waypoint': 'wp', 'istio.io/use-waypoint-namespace': 'shop' }))],
      ['the waypoint admitting every namespace', () => cfg.put(gateway('shop', 'wp', 'all', 'All'))],
      ['waypoint-for changed', () => cfg.put(gateway('shop', 'wp', 'workload', 'All'))],
      ['a for-service-account waypoint', () => cfg.put({ ...gateway('shop', 'wp', 'all', 'All'), metadata: { name: 'wp', namespace: 'shop', labels: { 'istio.io/waypoint-for': 'all' }, annotations: { 'istio.io/for-service-account': 'web' } } } as KObject)],
      ['a pod of another account behind the Service', () => cfg.put(pod('shop', 'web-4', 'web', { ip: '10.244.0.14', sa: 'other' }))],
      ['that pod deleted', () => cfg.remove('Pod', 'shop', 'web-4')],
      ['the waypoint Service deleted', () => cfg.remove('Service', 'shop', 'wp')],
      ['the namespace label removed', () => cfg.put(namespace('shop'))],
      ['an invalid policy edit', () => cfg.put(istio('security', 'AuthorizationPolicy', 'bank', 'no-shop', { action: 'DENY', bogus: true }))],
      ['a pod deleted', () => cfg.remove('Pod', 'shop', 'web-0')],
      ['a Service deleted', () => cfg.remove('Service', 'shop', 'db')],
      ['routing deleted', () => {
        cfg.remove('VirtualService', 'shop', 'split');
        cfg.remove('DestinationRule', 'bank', 'ledger');
      }],
      ['root policies deleted', () => {
        cfg.remove('PeerAuthentication', 'istio-system', 'default');
        cfg.remove('AuthorizationPolicy', 'istio-system', 'ledger-audit');
      }],
    ];
    for (const [what, edit] of edits) {
      edit();
      const a = incremental.run(cfg.snapshot());
      // From scratch, on copies, so nothing can be shared with the incremental builder.
      const scratch = analyze(cfg.fresh(), DEFAULT_MESH);
      expect(comparable(a), what).toEqual(comparable(scratch));
      publishers[0].publish(a.model);
      publishers[1].publish(a.envoy);
      const fresh = new ResourceStore();
      new WorkloadApiPublisher(fresh).publish(scratch.model);
      new EnvoyPublisher(fresh).publish(scratch.envoy);
      expect(served(store), what).toEqual(served(fresh));
    }
  });

  it('labelling a namespace rebuilds that namespace only, and sets its waypoints', () => {
    const cfg = new Config([namespace('a'), namespace('b'), gateway('a', 'wp', 'all'), service('a', 'wp', [15008]), service('a', 'web'), service('b', 'api'), pod('a', 'web-0', 'web', { ip: '10.0.0.1' }), pod('b', 'api-0', 'api', { ip: '10.0.1.1' })]);
    const analyzer = new Analyzer(DEFAULT_MESH);
    const before = analyzer.run(cfg.snapshot());
    expect(before.model.workloads.every((w) => !w.waypoint)).toBe(true);
    cfg.put(namespace('a', { 'istio.io/use-waypoint': 'wp' }));
    const after = analyzer.run(cfg.snapshot());
    expect(after.model.namespaces.get('b')).toBe(before.model.namespaces.get('b'));
    const wp = { address: '10.96.1.2', network: '', hboneMtlsPort: 15008 };
    expect(after.model.services.find((s) => s.name === 'web')?.waypoint).toEqual(wp);
    expect(after.model.workloads.find((w) => w.name === 'web-0')?.waypoint).toEqual(wp);
    expect(after.model.services.find((s) => s.name === 'wp')?.waypoint).toBeUndefined();
    expect(after.problems).toEqual([]);
    // A pod change under an unchanged label reuses the Services (no for-service-account waypoint).
    cfg.put(pod('a', 'web-1', 'web', { ip: '10.0.0.2' }));
    const third = analyzer.run(cfg.snapshot());
    expect(third.model.services.find((s) => s.name === 'web')).toBe(after.model.services.find((s) => s.name === 'web'));
    expect(third.model.workloads.find((w) => w.name === 'web-0')).toBe(after.model.workloads.find((w) => w.name === 'web-0'));
    expect(third.model.workloads.find((w) => w.name === 'web-1')?.waypoint).toEqual(wp);
  });

  it('rebuilds only what an edit touches', () => {
    const cfg = new Config([service('a', 'web'), service('b', 'api'), service('c', 'idle'), ...[0, 1].flatMap((i) => [pod('a', `web-${i}`, 'web', { ip: `10.0.0.${i + 1}` }), pod('b', `api-${i}`, 'api', { ip: `10.0.1.${i + 1}` })])]);
    const analyzer = new Analyzer(DEFAULT_MESH);
    const before = analyzer.run(cfg.snapshot());
    cfg.put(pod('a', 'web-0', 'web', { ip: '10.0.0.1', ready: false }));
    const after = analyzer.run(cfg.snapshot());

    const byUid = (a: typeof before) => new Map(a.model.workloads.map((w) => [w.name, w]));
    const [w0, w1] = [byUid(before), byUid(after)];
    expect(w1.get('web-0')).not.toBe(w0.get('web-0'));
    expect(w1.get('web-0')!.status).toBe('UNHEALTHY');
    for (const name of ['web-1', 'api-0', 'api-1']) expect(w1.get(name), name).toBe(w0.get(name));
    expect(after.model.services[0]).toBe(before.model.services[0]);
    // Whole namespaces are the same objects: consumers skip them by identity.
    expect(after.model.namespaces.get('b')).toBe(before.model.namespaces.get('b'));
    expect(after.model.namespaces.get('c')).toBe(before.model.namespaces.get('c')); // a namespace without pods too
    expect(after.model.namespaces.get('a')).not.toBe(before.model.namespaces.get('a'));
    expect(after.envoy.namespaces.get('b')).toBe(before.envoy.namespaces.get('b'));

    // Namespace b's Envoy resources are the very same encodings; a's endpoints were rebuilt.
    for (const [type, m] of after.envoy.resources)
      for (const [name, body] of m) {
        if (name.includes('.b.svc')) expect(body, `${type} ${name}`).toBe(before.envoy.resources.get(type)!.get(name));
      }
    const eds = [...after.envoy.resources].find(([t]) => t.endsWith('ClusterLoadAssignment'))![1];
    const webEds = [...eds].find(([n]) => n.includes('web.a.svc'))!;
    expect(Buffer.from(webEds[1]).equals(Buffer.from(before.envoy.resources.get([...after.envoy.resources.keys()].find((t) => t.endsWith('ClusterLoadAssignment'))!)!.get(webEds[0])!))).toBe(false);
  });
});
