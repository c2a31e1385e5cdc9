// targetRefs AuthorizationPolicies and the agents: a policy attached to a waypoint (Gateway, or a
// Service a waypoint serves) is the waypoint's and is not given to the agents; one targeting a
// Service or ServiceEntry no waypoint serves is enforced by the agents of that target's workloads,
// fail closed, and reported as Istio reports it ("not bound to a waypoint"). Selector policies with
// HTTP attributes keep failing closed at the agents, as before.
import { describe, expect, it } from 'vitest';
import { buildMeshModel, MeshModelBuilder } from '../../../../src/control/model/mesh-model.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { ConfigSnapshot } from '../../../../src/control/config/config-store.ts';
import type { KObject } from '../../../../src/kube/objects.ts';

const NS = 'shop';
const namespace = (labels?: Record<string, string>): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, ...(labels ? { labels } : {}) } });
const gateway: KObject = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'wp', namespace: NS }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } } as KObject;
const wpService: KObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'wp', namespace: NS }, spec: { clusterIP: '10.96.9.9', selector: { 'gateway.networking.k8s.io/gateway-name': 'wp' }, ports: [{ name: 'mesh', port: 15008 }] } } as KObject;
const service = (name: string, ip: string, labels?: Record<string, string>): KObject =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS, ...(labels ? { labels } : {}) }, spec: { clusterIP: ip, selector: { app: name }, ports: [{ port: 80, targetPort: 8080 }] } }) as KObject;
const pod = (name: string, app: string, ip: string): KObject =>
  ({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: NS, labels: { app }, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
    spec: { nodeName: 'node-0', serviceAccountName: app, containers: [{ name: 'c', image: 'app' }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  }) as KObject;
const se = (name: string, workloadSelector?: Record<string, string>): KObject =>
  ({ apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name, namespace: NS }, spec: { hosts: [`${name}.example.com`], ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], resolution: 'STATIC', ...(workloadSelector ? { workloadSelector: { labels: workloadSelector } } : { endpoints: [{ address: '10.1.1.1' }] }) } }) as KObject;
const ap = (name: string, spec: object): KObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: NS }, spec } as KObject);
const ref = (kind: string, name: string) => ({ group: kind === 'Service' ? '' : kind === 'Gateway' ? 'gateway.networking.k8s.io' : 'networking.istio.io', kind, name });

const BOUND = { 'istio.io/use-waypoint': 'wp' };
/** web is served by the waypoint, api is not, db (a pod behind a ServiceEntry's selector) never is. */
const world = () => [namespace(), gateway, wpService, service('web', '10.96.0.1', BOUND), service('api', '10.96.0.2'), pod('web-0', 'web', '10.244.0.1'), pod('api-0', 'api', '10.244.0.2'), pod('db-0', 'db', '10.244.0.3'), se('db', { app: 'db' }), se('ext')];
const L7_ALLOW = { rules: [{ to: [{ operation: { paths: ['/public/*'] } }] }] };

function model(objects: KObject[]) {
  const m = buildMeshModel(objects, DEFAULT_MESH);
  const wl = (name: string) => m.workloads.find((w) => w.name === name)!;
  return { m, wl, problems: m.problems.filter((p) => p.kind === 'AuthorizationPolicy').map((p) => `${p.name}: ${p.field}: ${p.reason}`) };
}

describe('targetRefs AuthorizationPolicy and the agents', () => {
  it('a policy on the Gateway, or on a Service the waypoint serves, is not given to the agents', () => {
    const { m, wl, problems } = model([...world(), ap('gw', { targetRefs: [ref('Gateway', 'wp')], ...L7_ALLOW }), ap('svc', { targetRefs: [ref('Service', 'web')], ...L7_ALLOW })]);
    expect(m.services.find((s) => s.name === 'web')?.waypoint).toBeDefined();
    expect(m.policies.map((p) => p.name)).toEqual([]);
    expect(wl('web-0').authorizationPolicies).toEqual([]);
    expect(problems).toEqual([]);
  });

  it('a Service no waypoint serves: its workloads\' agents enforce the policy fail closed, and it is reported', () => {
    const { m, wl, problems } = model([...world(), ap('api-allow', { targetRefs: [ref('Service', 'api'), ref('Service', 'web')], ...L7_ALLOW })]);
    expect(m.policies).toEqual([{ name: 'api-allow', namespace: NS, scope: 'WORKLOAD_SELECTOR', action: 'ALLOW', rules: [] }]);
    expect(wl('api-0').authorizationPolicies).toEqual([`${NS}/api-allow`]);
    expect(wl('web-0').authorizationPolicies).toEqual([]);
    expect(problems).toEqual([
      `api-allow: spec.targetRefs[0]: Service ${NS}/api is not bound to a waypoint: its workloads' agents enforce the policy, fail closed (HTTP attributes cannot be seen there)`,
      'api-allow: spec.rules[0].to[0].operation.paths: where enforced by the agents: HTTP attribute, not enforced at L4 (no waypoint): ALLOW rule dropped, it never matches',
    ]);
  });

  it('L4 rules of an unbound target are enforced as written; DENY keeps matching without its HTTP part', () => {
    const { m } = model([...world(), ap('api-deny', { targetRefs: [ref('Service', 'api')], action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'] } }], to: [{ operation: { methods: ['POST'] } }] }] })]);
    expect(m.policies).toEqual([{ name: 'api-deny', namespace: NS, scope: 'WORKLOAD_SELECTOR', action: 'DENY', rules: [{ clauses: [{ matches: [{ namespaces: [{ exact: 'evil' }] }] }] }] }]);
  });

  it('a ServiceEntry target: the agents of its selected workloads enforce it; without workloads it is reported', () => {
    const { m, wl, problems } = model([...world(), ap('se', { targetRefs: [ref('ServiceEntry', 'db'), ref('ServiceEntry', 'ext'), ref('ServiceEntry', 'ghost'), ref('Service', 'ghost')], ...L7_ALLOW })]);
    expect(m.policies.map((p) => p.name)).toEqual(['se']);
    expect(wl('db-0').authorizationPolicies).toEqual([`${NS}/se`]);
    expect(wl('api-0').authorizationPolicies).toEqual([]);
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringMatching(/^se: spec\.targetRefs\[0\]: ServiceEntry shop\/db is not bound to a waypoint .*its workloads' agents enforce the policy, fail closed/),
      expect.stringMatching(/^se: spec\.targetRefs\[1\]: ServiceEntry shop\/ext is not bound to a waypoint .*selects no workloads here, so nothing in the mesh enforces the policy for it/),
      'se: spec.targetRefs[2]: ServiceEntry shop/ghost was not found',
      'se: spec.targetRefs[3]: Service shop/ghost was not found',
    ]));
  });

  it('binding the Service to a waypoint moves the policy off the agents (incremental build)', () => {
    const b = new MeshModelBuilder(DEFAULT_MESH);
    const policy = ap('api-allow', { targetRefs: [ref('Service', 'api')], ...L7_ALLOW });
    const base = world();
    const before = b.build(ConfigSnapshot.of([...base, policy]));
    expect(before.workloads.find((w) => w.name === 'api-0')!.authorizationPolicies).toEqual([`${NS}/api-allow`]);
    const after = b.build(ConfigSnapshot.of([...base.map((o) => (o.kind === 'Service' && o.metadata.name === 'api' ? service('api', '10.96.0.2', BOUND) : o)), policy]));
    expect(after.workloads.find((w) => w.name === 'api-0')!.authorizationPolicies).toEqual([]);
    expect(after.policies).toEqual([]);
    expect(after.workloads.find((w) => w.name === 'api-0')!.waypoint).toBeUndefined(); // workload traffic: the waypoint is for services
  });

  it('the waypoint\'s own Service is not a target the agents enforce (that would cut the waypoint off)', () => {
    const wpPod = { ...pod('wp-0', 'wp', '10.244.0.9'), metadata: { ...pod('wp-0', 'wp', '10.244.0.9').metadata, labels: { 'gateway.networking.k8s.io/gateway-name': 'wp' } } } as KObject;
    const { m, wl, problems } = model([...world(), wpPod, ap('own', { targetRefs: [ref('Service', 'wp')], ...L7_ALLOW })]);
    expect(m.policies).toEqual([]);
    expect(wl('wp-0').authorizationPolicies).toEqual([]);
    expect(problems).toEqual([`own: spec.targetRefs[0]: Service ${NS}/wp is a waypoint's own Service: target its Gateway to apply the policy to what the waypoint serves (not applied here)`]);
  });

  it('a selector policy with HTTP attributes still fails closed at the agents (unchanged)', () => {
    const { m, wl } = model([...world(), ap('sel', { selector: { matchLabels: { app: 'web' } }, ...L7_ALLOW })]);
    expect(m.policies).toEqual([{ name: 'sel', namespace: NS, scope: 'WORKLOAD_SELECTOR', action: 'ALLOW', rules: [] }]);
    expect(wl('web-0').authorizationPolicies).toEqual([`${NS}/sel`]);
  });
});
