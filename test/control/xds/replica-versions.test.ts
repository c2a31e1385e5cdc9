// Two control plane replicas must serve the same resource versions for the same configuration,
// whatever order their sources delivered the objects in (informers of different kinds interleave
// differently in each process), or an agent moving between replicas would be sent everything again.
// (That a long-running replica, built incrementally, serves what a fresh one does is
// analyze-incremental.test.ts.)
import { describe, expect, it } from 'vitest';
import { analyze } from '../../../src/control/analyze.ts';
import { ConfigSnapshot } from '../../../src/control/config/config-store.ts';
import { DEFAULT_MESH } from '../../../src/control/model/networking/workloads.ts';
import { EnvoyPublisher } from '../../../src/control/xds/envoy/build.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';
import { WorkloadApiPublisher } from '../../../src/control/xds/workload-api.ts';
import type { KObject } from '../../../src/kube/objects.ts';

const pod = (ns: string, name: string, app: string, ip: string, node: string): KObject =>
  ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app } },
    spec: { nodeName: node, serviceAccountName: app, containers: [{ name: 'app', image: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  }) as KObject;
const service = (ns: string, name: string, ip: string, ports: number[] = [80]): KObject =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: ip, selector: { app: name }, ports: ports.map((p) => ({ name: `p${p}`, port: p, targetPort: 'http' })) } }) as KObject;
const istio = (group: string, kind: string, ns: string, name: string, spec: unknown, created = '2026-01-01T00:00:00Z'): KObject =>
  ({ apiVersion: `${group}.istio.io/v1`, kind, metadata: { name, namespace: ns, creationTimestamp: created }, spec }) as KObject;

const OBJECTS: KObject[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bank', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  service('shop', 'web', '10.96.0.10', [80, 8080]),
  service('shop', 'db', '10.96.0.11', [5432]),
  service('bank', 'ledger', '10.96.1.10'),
  ...[0, 1, 2, 3].map((i) => pod('shop', `web-${i}`, 'web', `10.244.0.${10 + i}`, `node-${i % 2}`)),
  pod('shop', 'db-0', 'db', '10.244.0.20', 'node-1'),
  ...[0, 1].map((i) => pod('bank', `ledger-${i}`, 'ledger', `10.244.1.${10 + i}`, `node-${i}`)),
  istio('security', 'AuthorizationPolicy', 'shop', 'db-from-web', { selector: { matchLabels: { app: 'db' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'] } }] }] }),
  istio('security', 'AuthorizationPolicy', 'bank', 'deny-shop', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['shop'] } }] }] }, '2026-01-02T00:00:00Z'),
  istio('security', 'PeerAuthentication', 'istio-system', 'default', { mtls: { mode: 'STRICT' } }),
  istio('networking', 'DestinationRule', 'bank', 'ledger', { host: 'ledger', subsets: [{ name: 'v1', labels: { app: 'ledger' } }] }),
  istio('networking', 'VirtualService', 'shop', 'split', { hosts: ['ledger.bank.svc.cluster.local'], http: [{ route: [{ destination: { host: 'ledger.bank.svc.cluster.local', subset: 'v1' }, weight: 90 }, { destination: { host: 'web', port: { number: 80 } }, weight: 10 }] }] }),
];

/** What one replica would serve: type -> name -> version. */
function served(objects: KObject[]): Record<string, Record<string, string>> {
  const a = analyze(ConfigSnapshot.of(structuredClone(objects)), DEFAULT_MESH);
  const store = new ResourceStore();
  new WorkloadApiPublisher(store).publish(a.model);
  new EnvoyPublisher(store).publish(a.envoy);
  return Object.fromEntries(store.types().sort().map((t) => [t, Object.fromEntries([...store.get(t)].map(([n, r]) => [n, r.version]).sort(([x], [y]) => (x! < y! ? -1 : 1)))]));
}

describe('resource versions across replicas', () => {
  it('are the same for the same configuration in any delivery order', () => {
    const base = served(OBJECTS);
    expect(Object.keys(base).length).toBeGreaterThanOrEqual(3); // workload API and Envoy types both present
    const rotate = (k: number) => [...OBJECTS.slice(k), ...OBJECTS.slice(0, k)];
    const interleaved = [...OBJECTS.filter((_, i) => i % 2), ...OBJECTS.filter((_, i) => !(i % 2))];
    for (const [what, order] of [['reversed', [...OBJECTS].reverse()], ['rotated', rotate(7)], ['interleaved', interleaved]] as const) expect(served([...order]), what).toEqual(base);
  });
});
