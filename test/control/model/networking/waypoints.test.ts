// Which traffic goes through which waypoint, decided by the control plane as istiod decides it:
// Gateways of class istio-waypoint, `istio.io/waypoint-for`, `istio.io/for-service-account`, the
// `istio.io/use-waypoint` labels on Namespaces, Services and Pods with their precedence and `none`,
// cross-namespace use, and every way a label can name something that is not a usable waypoint
// (then no waypoint, and a problem naming the object and field).
import { describe, expect, it } from 'vitest';
import type { GatewayAddress } from '../../../../src/api/mesh.ts';
import { analyze } from '../../../../src/control/analyze.ts';
import { ConfigSnapshot } from '../../../../src/control/config/config-store.ts';
import { buildMeshModel } from '../../../../src/control/model/mesh-model.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import type { KObject } from '../../../../src/kube/objects.ts';
import { checkWaypoint, type GatewayObject } from '../../../../src/kube/waypoint.ts';

const at = (address: string): GatewayAddress => ({ address, network: '', hboneMtlsPort: 15008 });
const WP = at('10.96.9.9');
const WP2 = at('10.96.9.10');
const INFRA = at('10.96.8.8');

const namespace = (name: string, labels?: Record<string, string>): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } });
const gateway = (ns: string, name: string, o: { for?: string; sa?: string; cls?: string; listeners?: unknown[]; apiVersion?: string; allowed?: unknown } = {}): KObject => ({
  apiVersion: o.apiVersion ?? 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace: ns, ...(o.for ? { labels: { 'istio.io/waypoint-for': o.for } } : {}), ...(o.sa !== undefined ? { annotations: { 'istio.io/for-service-account': o.sa } } : {}) },
  spec: { gatewayClassName: o.cls ?? 'istio-waypoint', listeners: o.listeners ?? [{ name: 'mesh', port: 15008, protocol: 'HBONE', ...(o.allowed ? { allowedRoutes: { namespaces: o.allowed } } : {}) }] },
});
/** The waypoint's own Service (what istiod, or the lab, creates with the Deployment). */
const wpService = (ns: string, name: string, ip: string): KObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { clusterIP: ip, selector: { 'gateway.networking.k8s.io/gateway-name': name }, ports: [{ name: 'mesh', port: 15008 }] },
});
const service = (ns: string, name: string, ip: string, labels?: Record<string, string>): KObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns, ...(labels ? { labels } : {}) },
  spec: { clusterIP: ip, selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }] },
});
const pod = (ns: string, name: string, app: string, ip: string, o: { sa?: string; labels?: Record<string, string> } = {}): KObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels: { app, ...o.labels }, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
  spec: { nodeName: 'node-0', serviceAccountName: o.sa ?? app, containers: [{ name: 'c', image: 'app' }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});
/** The waypoint's own pod, as its Deployment labels it. */
const wpPod = (ns: string, name: string, ip: string) => pod(ns, `${name}-0`, name, ip, { sa: name, labels: { 'gateway.networking.k8s.io/gateway-name': name } });

const shop = (nsLabels?: Record<string, string>, o: { svcLabels?: Record<string, string>; podLabels?: Record<string, string> } = {}) => [
  namespace('shop', nsLabels),
  service('shop', 'web', '10.96.0.1', o.svcLabels),
  pod('shop', 'web-0', 'web', '10.244.0.1', { labels: o.podLabels }),
];
const waypoint = (o: Parameters<typeof gateway>[2] = {}, name = 'wp', ip = '10.96.9.9') => [gateway('shop', name, o), wpService('shop', name, ip)];

function model(objects: KObject[]) {
  const m = buildMeshModel(objects, DEFAULT_MESH);
  const svc = (name: string, ns = 'shop') => m.services.find((s) => s.name === name && s.namespace === ns);
  const wl = (name: string, ns = 'shop') => m.workloads.find((w) => w.name === name && w.namespace === ns);
  return { m, svc, wl, problems: m.problems.map((p) => `${p.kind} ${p.namespace}/${p.name}: ${p.field}: ${p.reason}`) };
}

describe('waypoint enrollment', () => {
  const use = { 'istio.io/use-waypoint': 'wp' };
  const cases: { name: string; objects: KObject[]; svc?: GatewayAddress; wl?: GatewayAddress; problem?: RegExp }[] = [
    { name: 'nothing labelled: no waypoint', objects: [...shop(), ...waypoint({ for: 'all' })] },
    { name: 'a labelled namespace, waypoint-for defaulting to service', objects: [...shop(use), ...waypoint()], svc: WP },
    { name: 'waypoint-for: service', objects: [...shop(use), ...waypoint({ for: 'service' })], svc: WP },
    { name: 'waypoint-for: workload', objects: [...shop(use), ...waypoint({ for: 'workload' })], wl: WP },
    { name: 'waypoint-for: all', objects: [...shop(use), ...waypoint({ for: 'all' })], svc: WP, wl: WP },
    { name: 'waypoint-for: none', objects: [...shop(use), ...waypoint({ for: 'none' })] },
    { name: 'a Service opts out of its namespace\'s waypoint', objects: [...shop(use, { svcLabels: { 'istio.io/use-waypoint': 'none' } }), ...waypoint({ for: 'all' })], wl: WP },
    { name: 'a Pod opts out of its namespace\'s waypoint', objects: [...shop(use, { podLabels: { 'istio.io/use-waypoint': 'none' } }), ...waypoint({ for: 'all' })], svc: WP },
    { name: 'a Service labelled alone', objects: [...shop(undefined, { svcLabels: use }), ...waypoint({ for: 'all' })], svc: WP },
    { name: 'a Pod labelled alone', objects: [...shop(undefined, { podLabels: use }), ...waypoint({ for: 'all' })], wl: WP },
    {
      name: 'the Service\'s own label wins over its namespace\'s',
      objects: [...shop(use, { svcLabels: { 'istio.io/use-waypoint': 'wp2' } }), ...waypoint({ for: 'all' }), ...waypoint({ for: 'all' }, 'wp2', '10.96.9.10')],
      svc: WP2,
      wl: WP,
    },
    {
      name: 'the Pod\'s own label wins over its namespace\'s',
      objects: [...shop(use, { podLabels: { 'istio.io/use-waypoint': 'wp2' } }), ...waypoint({ for: 'all' }), ...waypoint({ for: 'all' }, 'wp2', '10.96.9.10')],
      svc: WP,
      wl: WP2,
    },
    { name: 'a namespace label naming no Gateway', objects: [...shop({ 'istio.io/use-waypoint': 'nope' }), ...waypoint()], problem: /^Namespace \/shop: metadata\.labels\["istio\.io\/use-waypoint"\]: waypoint shop\/nope does not exist/ },
    { name: 'a Service label naming no Gateway', objects: [...shop(undefined, { svcLabels: { 'istio.io/use-waypoint': 'nope' } })], problem: /^Service shop\/web: metadata\.labels\["istio\.io\/use-waypoint"\]: waypoint shop\/nope does not exist/ },
    { name: 'an own label naming no Gateway does not fall back to the namespace\'s', objects: [...shop(use, { podLabels: { 'istio.io/use-waypoint': 'nope' } }), ...waypoint({ for: 'all' })], svc: WP, problem: /^Pod shop\/web-0: .*shop\/nope does not exist/ },
    { name: 'a Gateway of another class', objects: [...shop(use), ...waypoint({ cls: 'istio' })], problem: /^Namespace \/shop: .*Gateway shop\/wp is not a waypoint: its gatewayClassName is "istio", not istio-waypoint/ },
    { name: 'an invalid waypoint Gateway', objects: [...shop(use), ...waypoint({ for: 'everything' })], problem: /Gateway shop\/wp is not a waypoint: it is not a valid waypoint/ },
    { name: 'a waypoint with no Service yet is not ready', objects: [...shop(use), gateway('shop', 'wp')], problem: /^Namespace \/shop: .*waypoint shop\/wp is not ready \(no Service shop\/wp with a ClusterIP yet\)/ },
    { name: 'a waypoint whose Service is headless is not ready', objects: [...shop(use), gateway('shop', 'wp'), { ...wpService('shop', 'wp', 'None') }], problem: /waypoint shop\/wp is not ready/ },
    { name: 'an invalid label value', objects: [...shop(undefined, { podLabels: { 'istio.io/use-waypoint': 'Not_A_Name' } }), ...waypoint({ for: 'all' })], problem: /^Pod shop\/web-0: metadata\.labels\["istio\.io\/use-waypoint"\]: "Not_A_Name" is not a valid Gateway name/ },
    { name: 'an invalid waypoint namespace', objects: [...shop(undefined, { podLabels: { 'istio.io/use-waypoint': 'wp', 'istio.io/use-waypoint-namespace': 'Bad NS' } }), ...waypoint({ for: 'all' })], problem: /^Pod shop\/web-0: metadata\.labels\["istio\.io\/use-waypoint-namespace"\]: "Bad NS" is not a valid namespace name/ },
    { name: 'a Service naming a workload-only waypoint', objects: [...shop(undefined, { svcLabels: use }), ...waypoint({ for: 'workload' })], problem: /^Service shop\/web: .*waypoint shop\/wp does not take service traffic \(istio\.io\/waypoint-for: workload\)/ },
    { name: 'a Pod naming a service-only waypoint', objects: [...shop(undefined, { podLabels: use }), ...waypoint()], problem: /^Pod shop\/web-0: .*waypoint shop\/wp does not take workload traffic \(istio\.io\/waypoint-for: service\)/ },
    {
      name: 'a waypoint\'s own pod and Service never get one',
      objects: [...shop(use), ...waypoint({ for: 'all' }), wpPod('shop', 'wp', '10.244.0.9')],
      svc: WP,
      wl: WP,
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const { svc, wl, problems, m } = model(c.objects);
      expect(svc('web')?.waypoint, 'Service.waypoint').toEqual(c.svc);
      expect(wl('web-0')?.waypoint, 'Workload.waypoint').toEqual(c.wl);
      expect(svc('web')).toBeDefined();
      expect(wl('web-0')).toBeDefined();
      if (c.problem) expect(problems.some((p) => c.problem!.test(p)), problems.join('\n')).toBe(true);
      else expect(problems).toEqual([]);
      // Loops are impossible: a waypoint's own Service and pods go nowhere but to themselves.
      expect(m.services.find((s) => s.name === 'wp')?.waypoint).toBeUndefined();
      expect(m.workloads.find((w) => w.name === 'wp-0')?.waypoint).toBeUndefined();
    });
});

describe('waypoints of another namespace', () => {
  const infra = (allowed?: unknown, nsLabels?: Record<string, string>) => [namespace('infra', nsLabels), gateway('infra', 'shared', { for: 'all', allowed }), wpService('infra', 'shared', '10.96.8.8')];
  const use = { 'istio.io/use-waypoint': 'shared', 'istio.io/use-waypoint-namespace': 'infra' };
  it('are refused by default (the HBONE listener admits its own namespace only, as in the Gateway API)', () => {
    const { svc, wl, problems } = model([...shop(use), ...infra()]);
    expect(svc('web')?.waypoint).toBeUndefined();
    expect(wl('web-0')?.waypoint).toBeUndefined();
    expect(problems).toEqual(['Namespace /shop: metadata.labels["istio.io/use-waypoint"]: waypoint infra/shared does not admit namespace shop (its HBONE listener\'s allowedRoutes.namespaces)']);
  });
  it('are used when the listener admits All', () => {
    const { svc, wl, problems } = model([...shop(use), ...infra({ from: 'All' })]);
    expect([svc('web')?.waypoint, wl('web-0')?.waypoint, problems]).toEqual([INFRA, INFRA, []]);
  });
  it('are used when the namespace matches the listener\'s selector, and refused when it does not', () => {
    const sel = { from: 'Selector', selector: { matchLabels: { mesh: 'yes' } } };
    expect(model([...shop({ ...use, mesh: 'yes' }), ...infra(sel)]).svc('web')?.waypoint).toEqual(INFRA);
    const refused = model([...shop({ ...use, mesh: 'no' }), ...infra(sel)]);
    expect(refused.svc('web')?.waypoint).toBeUndefined();
    expect(refused.problems[0]).toMatch(/does not admit namespace shop/);
  });
  it('a selector weft cannot evaluate admits only the waypoint\'s own namespace, and says so', () => {
    const r = model([...shop(use), ...infra({ from: 'Selector', selector: { matchExpressions: [{ key: 'a', operator: 'Exists' }] } })]);
    expect(r.svc('web')?.waypoint).toBeUndefined();
    expect(r.problems).toContain('Gateway infra/shared: spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions: not supported by weft: only the waypoint\'s own namespace may use it');
  });
});

describe('a waypoint for one service account', () => {
  const objects = (o: { for?: string; dbLabels?: Record<string, string>; extra?: KObject[] } = {}) => [
    ...shop({ 'istio.io/use-waypoint': 'wp' }),
    service('shop', 'db', '10.96.0.2'),
    pod('shop', 'db-0', 'db', '10.244.0.2', { labels: o.dbLabels }),
    ...waypoint({ for: o.for ?? 'all', sa: 'web' }),
    ...(o.extra ?? []),
  ];
  it('serves that account\'s workloads, and Services whose every pod runs as it; nothing else', () => {
    const { svc, wl, problems } = model(objects());
    expect([svc('web')?.waypoint, wl('web-0')?.waypoint]).toEqual([WP, WP]);
    expect([svc('db')?.waypoint, wl('db-0')?.waypoint]).toEqual([undefined, undefined]);
    expect(problems).toEqual([]);
  });
  it('does not serve a Service that also selects another account\'s pods', () => {
    const { svc, wl } = model(objects({ extra: [pod('shop', 'web-odd', 'web', '10.244.0.3', { sa: 'other' })] }));
    expect(svc('web')?.waypoint).toBeUndefined();
    expect(wl('web-0')?.waypoint).toEqual(WP);
    expect(wl('web-odd')?.waypoint).toBeUndefined();
  });
  it('says so when a pod of another account asks for it by its own label', () => {
    const { wl, problems } = model(objects({ dbLabels: { 'istio.io/use-waypoint': 'wp' } }));
    expect(wl('db-0')?.waypoint).toBeUndefined();
    expect(problems).toEqual(['Pod shop/db-0: metadata.labels["istio.io/use-waypoint"]: waypoint shop/wp serves only service account web, not db']);
  });
  it('honours waypoint-for: a workload-only one sets no Service waypoint', () => {
    const { svc, wl } = model(objects({ for: 'workload' }));
    expect([svc('web')?.waypoint, wl('web-0')?.waypoint]).toEqual([undefined, WP]);
  });
});

// Which Gateways are waypoints is the shared rule's (checkWaypoint; its table of cases is in
// test/kube/waypoint.test.ts); these show the model takes its verdict: refused, no waypoint and the
// same problem; accepted, a waypoint, with what it ignores reported.
describe('waypoint Gateways are checked by the shared rule', () => {
  const problemsOf = (gw: KObject) => model([gw]).problems;
  it('a refused Gateway is no waypoint, and its problem is the one the reconciler puts in its status', () => {
    const gw = gateway('shop', 'wp', { listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }] });
    const checked = checkWaypoint(gw as GatewayObject);
    expect('problem' in checked && checked.problem).toMatchObject({ field: 'spec.listeners', reason: 'ListenersNotValid' });
    const { svc, problems } = model([...shop({ 'istio.io/use-waypoint': 'wp' }), gw, wpService('shop', 'wp', '10.96.9.9')]);
    expect(svc('web')?.waypoint).toBeUndefined();
    expect(problems).toContain(`Gateway shop/wp: spec.listeners: ${'problem' in checked ? checked.problem.message : ''}`);
    expect(problems).toContain('Namespace /shop: metadata.labels["istio.io/use-waypoint"]: Gateway shop/wp is not a waypoint: it is not a valid waypoint (see its problems)');
  });

  it('an HBONE listener on 15008 of any name is a waypoint; the other listeners are reported as ignored', () => {
    const gw = gateway('shop', 'wp', { listeners: [{ name: 'hbone', port: 15008, protocol: 'HBONE' }, { name: 'http', port: 80, protocol: 'HTTP' }] });
    const { svc, problems } = model([...shop({ 'istio.io/use-waypoint': 'wp' }), gw, wpService('shop', 'wp', '10.96.9.9')]);
    expect(svc('web')?.waypoint).toEqual(WP);
    expect(problems).toEqual(["Gateway shop/wp: spec.listeners[1]: weft's waypoint serves only its HBONE listener on 15008: ignored"]);
  });

  it('listeners that are not a list', () => {
    expect(problemsOf({ ...gateway('shop', 'wp'), spec: { gatewayClassName: 'istio-waypoint', listeners: 'mesh' } })).toEqual(['Gateway shop/wp: spec.listeners: expected a list']);
  });

  it('leaves Gateways of other classes alone, and accepts a valid waypoint silently', () => {
    expect(problemsOf(gateway('shop', 'ingress', { cls: 'istio', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] }))).toEqual([]);
    expect(problemsOf(gateway('shop', 'wp', { for: 'all', sa: 'web' }))).toEqual([]);
  });

  it('survives hostile shapes without throwing', () => {
    const hostile: unknown[] = [null, 'x', 42, [], { listeners: null }, { gatewayClassName: 'istio-waypoint', listeners: [null, 7, 'x', { port: '15008', protocol: 'HBONE' }, { allowedRoutes: 'x' }] }];
    for (const spec of hostile) {
      const gw = { ...gateway('shop', 'wp'), spec } as KObject;
      expect(() => model([...shop({ 'istio.io/use-waypoint': 'wp' }), gw, wpService('shop', 'wp', '10.96.9.9')])).not.toThrow();
      expect(model([...shop({ 'istio.io/use-waypoint': 'wp' }), gw, wpService('shop', 'wp', '10.96.9.9')]).svc('web')?.waypoint).toBeUndefined();
    }
  });

  it('weft analyze names the file, the object and the field', () => {
    const gw = { ...gateway('shop', 'wp', { for: 'sometimes' }), __source: 'waypoint.yaml' } as KObject;
    const ns = { ...namespace('shop', { 'istio.io/use-waypoint': 'wp' }), __source: 'ns.yaml' } as KObject;
    const a = analyze(ConfigSnapshot.of([gw, ns, service('shop', 'web', '10.96.0.1')]), DEFAULT_MESH);
    expect(a.problems).toContain('waypoint.yaml: Gateway shop/wp: metadata.labels["istio.io/waypoint-for"]: unknown value "sometimes" (service, workload, all, none)');
    expect(a.problems.some((p) => p.startsWith('ns.yaml: Namespace shop: metadata.labels["istio.io/use-waypoint"]: Gateway shop/wp is not a waypoint'))).toBe(true);
  });
});

describe('ServiceEntries', () => {
  it('are checked like Services, and weft says it does not yet route them through a waypoint', () => {
    const se = (labels: Record<string, string>): KObject => ({
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'ext', namespace: 'shop', labels },
      spec: { hosts: ['ext.example.com'], ports: [{ number: 80, name: 'http' }], resolution: 'DNS' },
    });
    expect(model([...shop(), ...waypoint(), se({ 'istio.io/use-waypoint': 'gone' })]).problems).toEqual(['ServiceEntry shop/ext: metadata.labels["istio.io/use-waypoint"]: waypoint shop/gone does not exist: its traffic is not sent to a waypoint']);
    expect(model([...shop(), ...waypoint(), se({ 'istio.io/use-waypoint': 'wp' })]).problems).toEqual(['ServiceEntry shop/ext: metadata.labels["istio.io/use-waypoint"]: weft does not yet publish ServiceEntries to agents: traffic to this entry does not go through a waypoint']);
  });
});
