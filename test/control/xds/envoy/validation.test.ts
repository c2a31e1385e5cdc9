// Validation of the traffic-management kinds: problems name the field, an invalid object is
// skipped and every valid one kept; and the build stays linear at mesh scale.
import { describe, expect, it } from 'vitest';
import type { KObject, Pod, Service } from '../../../../src/kube/objects.ts';
import { parseNetworking } from '../../../../src/control/model/networking/config.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, TYPE_CLUSTER, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { gateway, istio, NS } from './harness.ts';

const fields = (objects: KObject[]) => parseNetworking(objects, DEFAULT_MESH).problems.map((p) => `${p.kind}/${p.name}: ${p.field}`);

describe('networking validation', () => {
  it('reports bad VirtualService fields by path and skips only that object', () => {
    const good = istio('VirtualService', 'good', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }] }] });
    const bad = istio('VirtualService', 'bad', {
      hosts: ['b'],
      http: [{ match: [{ headers: { 'x-user': { exact: 'x', prefix: 'y' } } }], route: [{ destination: { host: 'b' }, weight: 150 }], timeout: 'soon', fault: { abort: { grpcStatus: 'NOPE' } } }],
    });
    const net = parseNetworking([good, bad], DEFAULT_MESH);
    expect(net.problems.map((p) => `${p.field}: ${p.reason}`)).toEqual([
      'spec.http[0].match[0].headers.x-user: expected exactly one of exact, prefix, regex',
      'spec.http[0].route[0].weight: expected an integer in [0, 100]',
      'spec.http[0].timeout: invalid duration "soon" (e.g. "500ms", "2s", "1m")',
      expect.stringMatching(/^spec\.http\[0\]\.fault\.abort\.grpcStatus: expected a gRPC status name/),
    ]);
    expect([...net.routes.keys()]).toEqual([`a.${NS}.svc.cluster.local`]);
    expect(net.problems.every((p) => p.kind === 'VirtualService' && p.namespace === NS && p.name === 'bad')).toBe(true);
  });

  it('validates DestinationRule, ServiceEntry, HTTPRoute and GRPCRoute', () => {
    expect(fields([
      istio('DestinationRule', 'dr', { host: 'a', subsets: [{ name: 'V1', labels: { v: 1 } }, { name: 'V1' }], trafficPolicy: { outlierDetection: { maxEjectionPercent: 101 } } }),
      istio('ServiceEntry', 'se', { hosts: ['ext.example.com'], resolution: 'STATIC', ports: [{ number: 0, name: 'grpc' }], endpoints: [{ address: 'not-an-ip' }] }),
      gateway('HTTPRoute', 'hr', { parentRefs: [{ group: '', kind: 'Service', name: 'a' }], rules: [{ matches: [{ path: { type: 'Weird', value: '/x' } }], backendRefs: [{ name: 'a' }] }] }),
      gateway('GRPCRoute', 'gr', { parentRefs: [{ group: '', kind: 'Service', name: 'a' }], rules: [{ matches: [{ method: {} }], backendRefs: [{ name: 'a', port: 50051 }] }] }),
    ])).toEqual([
      'DestinationRule/dr: spec.trafficPolicy.outlierDetection.maxEjectionPercent',
      'DestinationRule/dr: spec.subsets[0].name',
      'DestinationRule/dr: spec.subsets[0].labels',
      'DestinationRule/dr: spec.subsets[1].name',
      'DestinationRule/dr: spec.subsets[1].name',
      'ServiceEntry/se: spec.ports[0].number',
      'ServiceEntry/se: spec.ports',
      'ServiceEntry/se: spec.endpoints[0].address',
      'HTTPRoute/hr: spec.rules[0].matches[0].path.type',
      'HTTPRoute/hr: spec.rules[0].backendRefs[0].port',
      'HTTPRoute/hr: spec.rules[0].backendRefs',
      'GRPCRoute/gr: spec.rules[0].matches[0].method',
    ]);
  });

  it('reports unsupported but harmless fields without dropping the object', () => {
    const net = parseNetworking([istio('VirtualService', 'vs', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }], corsPolicy: {} }] })], DEFAULT_MESH);
    expect(net.problems.map((p) => p.field)).toEqual(['spec.http[0].corsPolicy']);
    expect(net.routes.size).toBe(1);
  });

  it('orders Gateway API matches by specificity and prefers them over VirtualService', () => {
    const svc: Service = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: NS }, spec: { selector: { app: 'a' }, ports: [{ port: 80 }] } };
    const built = buildEnvoyResources([
      svc,
      istio('VirtualService', 'vs', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a' } }] }] }),
      gateway('GRPCRoute', 'gr', { parentRefs: [{ group: '', kind: 'Service', name: 'a' }], rules: [
        { matches: [{ method: { service: 'pkg.Svc' } }], backendRefs: [{ name: 'a', port: 80 }] },
        { matches: [{ method: { service: 'pkg.Svc', method: 'Get' } }], backendRefs: [{ name: 'a', port: 80 }] },
      ] }),
    ], DEFAULT_MESH);
    expect(built.problems).toEqual([]);
    const rc = decode(TYPE_ROUTE, built.resources.get(TYPE_ROUTE)!.get(`a.${NS}.svc.cluster.local:80`)!) as { virtualHosts: { routes: { match: Record<string, unknown> }[] }[] };
    expect(rc.virtualHosts[0]!.routes.map((r) => r.match.path ?? r.match.prefix)).toEqual(['/pkg.Svc/Get', '/pkg.Svc/']);
  });

  it('builds 1,000 services over 10,000 pods in linear time', () => {
    const objects: KObject[] = [];
    for (let s = 0; s < 1000; s++) {
      objects.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${s}`, namespace: NS }, spec: { selector: { app: `app-${s}` }, ports: [{ port: 8080 }] } } as Service);
      for (let p = 0; p < 10; p++) {
        objects.push({
          apiVersion: 'v1', kind: 'Pod', metadata: { name: `pod-${s}-${p}`, namespace: NS, labels: { app: `app-${s}`, tier: 'x' } },
          spec: { containers: [{ name: 'c' }] },
          status: { phase: 'Running', podIP: `10.${(s >> 8) & 255}.${s & 255}.${p + 1}`, conditions: [{ type: 'Ready', status: 'True' }] },
        } as Pod);
      }
    }
    const start = performance.now();
    const built = buildEnvoyResources(objects, DEFAULT_MESH);
    const ms = performance.now() - start;
    expect(built.resources.get(TYPE_CLUSTER)!.size).toBe(1000);
    expect(ms).toBeLessThan(10_000); // a bound on accidental quadratic work, not a benchmark
  });
});
