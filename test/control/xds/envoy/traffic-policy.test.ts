// DestinationRule traffic policy -> Envoy, as Istio translates it: consistentHash as a RING_HASH or
// MAGLEV cluster plus the routes' hash_policy (header, cookie with path and ttl, source IP, query
// parameter), portLevelSettings and subset policies merged per cluster (a port setting replaces the
// four fields and does not inherit), connectionPool as circuit-breaker thresholds with Istio's
// unlimited defaults, outlierDetection with the panic threshold off; and the problems of what
// cannot be translated, by field.
import { describe, expect, it } from 'vitest';
import { parseNetworking } from '../../../../src/control/model/networking/config.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, TYPE_CLUSTER, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import type { KObject, Pod, Service } from '../../../../src/kube/objects.ts';
import { istio, NS } from './harness.ts';

const svc: Service = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: NS }, spec: { selector: { app: 'a' }, clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }, { name: 'admin', port: 9090 }] } };
const pod = (name: string, ip: string, version: string): Pod => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: 'a', version } },
  spec: { containers: [{ name: 'c', image: 'x' }] }, status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
}) as Pod;
const HOST = `a.${NS}.svc.cluster.local`;
const name = (port: number, subset = '') => `outbound|${port}|${subset}|${HOST}`;

function build(objects: KObject[]) {
  const built = buildEnvoyResources([svc, pod('a1', '10.0.0.1', 'v1'), pod('a2', '10.0.0.2', 'v2'), ...objects], DEFAULT_MESH);
  const cluster = (n: string) => decode(TYPE_CLUSTER, built.resources.get(TYPE_CLUSTER)!.get(n)!);
  const routes = (port: number) => {
    const rc = decode(TYPE_ROUTE, built.resources.get(TYPE_ROUTE)!.get(`${HOST}:${port}`)!) as { virtualHosts: { routes: { name: string; route: Record<string, unknown> }[] }[] };
    return rc.virtualHosts[0]!.routes;
  };
  return { built, cluster, routes };
}
const problems = (spec: object) => parseNetworking([istio('DestinationRule', 'dr', { host: 'a', ...spec })], DEFAULT_MESH).problems.map((p) => `${p.field}: ${p.reason}`);

describe('DestinationRule traffic policy to Envoy', () => {
  it('consistentHash: a RING_HASH cluster and the hash_policy on the routes that send to it', () => {
    const { cluster, routes } = build([
      istio('DestinationRule', 'a', { host: 'a', trafficPolicy: { loadBalancer: { consistentHash: { httpCookie: { name: 'sticky', path: '/', ttl: '30s' }, ringHash: { minimumRingSize: 4096 } } } } }),
    ]);
    expect(cluster(name(80))).toMatchObject({ lbPolicy: 'RING_HASH', ringHashLbConfig: { minimumRingSize: { value: 4096 } } });
    expect(routes(80)[0]!.route.hashPolicy).toMatchObject([{ cookie: { name: 'sticky', path: '/', ttl: { seconds: 30 } } }]);
  });

  it.each([
    [{ httpHeaderName: 'X-User' }, { header: { headerName: 'x-user' } }],
    [{ useSourceIp: true }, { connectionProperties: { sourceIp: true } }],
    [{ httpQueryParameterName: 'user' }, { queryParameter: { name: 'user' } }],
    [{ httpCookie: { name: 'c' } }, { cookie: { name: 'c' } }],
  ])('hashes %j as %j', (consistentHash, policy) => {
    const { cluster, routes } = build([istio('DestinationRule', 'a', { host: 'a', trafficPolicy: { loadBalancer: { consistentHash } } })]);
    expect(cluster(name(80)).lbPolicy).toBe('RING_HASH');
    expect(routes(80)[0]!.route.hashPolicy).toMatchObject([policy]);
  });

  it('maglev: a MAGLEV cluster with its table size', () => {
    const { cluster } = build([istio('DestinationRule', 'a', { host: 'a', trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', maglev: { tableSize: 251 } } } } })]);
    expect(cluster(name(80))).toMatchObject({ lbPolicy: 'MAGLEV', maglevLbConfig: { tableSize: { value: 251 } } });
  });

  it('merges per cluster: a port setting replaces the top level for its port (no inheritance), a subset its fields, a subset port setting all four', () => {
    const { cluster, routes } = build([
      istio('DestinationRule', 'a', {
        host: 'a',
        trafficPolicy: {
          loadBalancer: { simple: 'RANDOM' },
          connectionPool: { http: { http2MaxRequests: 10 } },
          portLevelSettings: [{ port: { number: 9090 }, loadBalancer: { consistentHash: { httpHeaderName: 'x-admin' } } }],
        },
        subsets: [
          { name: 'v1', labels: { version: 'v1' }, trafficPolicy: { outlierDetection: { consecutive5xxErrors: 2 } } },
          { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' }, portLevelSettings: [{ port: { number: 80 }, connectionPool: { tcp: { maxConnections: 3 } } }] } },
        ],
      }),
      istio('VirtualService', 'a', { hosts: ['a'], http: [{ route: [{ destination: { host: 'a', subset: 'v1', port: { number: 9090 } } }] }] }),
    ]);
    // Port 80, whole service: the top level.
    expect(cluster(name(80)).loadBalancingPolicy).toBeDefined();
    expect((cluster(name(80)).circuitBreakers as { thresholds: object[] }).thresholds[0]).toMatchObject({ maxRequests: { value: 10 }, maxConnections: { value: 4_294_967_295 } });
    // Port 9090: the port setting alone; the pool is not inherited.
    expect(cluster(name(9090)).lbPolicy).toBe('RING_HASH');
    expect(cluster(name(9090)).circuitBreakers).toBeUndefined();
    // Subset v1 on 9090: its outlier detection over the 9090 setting; v2 on 80: its port setting only.
    expect(cluster(name(9090, 'v1'))).toMatchObject({ lbPolicy: 'RING_HASH', outlierDetection: { consecutive_5xx: { value: 2 } }, commonLbConfig: { healthyPanicThreshold: {} } });
    expect(cluster(name(80, 'v2')).lbPolicy ?? 'ROUND_ROBIN').toBe('ROUND_ROBIN');
    expect(cluster(name(80, 'v2')).loadBalancingPolicy).toBeUndefined();
    expect((cluster(name(80, 'v2')).circuitBreakers as { thresholds: object[] }).thresholds[0]).toMatchObject({ maxConnections: { value: 3 } });
    expect(cluster(name(9090, 'v2')).loadBalancingPolicy).toBeDefined(); // LEAST_REQUEST
    // The route (on either port: it names no port to match) sends to v1 on 9090 and hashes as that cluster does.
    expect(routes(9090)[0]!.route.hashPolicy).toMatchObject([{ header: { headerName: 'x-admin' } }]);
    expect(routes(80)[0]!.route).toMatchObject({ cluster: name(9090, 'v1'), hashPolicy: [{ header: { headerName: 'x-admin' } }] });
  });

  it('outlier detection comes with the panic threshold at minHealthPercent (0 unless set)', () => {
    const { cluster } = build([istio('DestinationRule', 'a', { host: 'a', trafficPolicy: { outlierDetection: { consecutiveGatewayErrors: 3, minHealthPercent: 40 } } })]);
    expect(cluster(name(80))).toMatchObject({ commonLbConfig: { healthyPanicThreshold: { value: 40 } }, outlierDetection: { consecutiveGatewayFailure: { value: 3 } } });
  });

  it('reports what cannot be translated, by field', () => {
    expect(problems({ trafficPolicy: { loadBalancer: { simple: 'RANDOM', consistentHash: { useSourceIp: true } } } })).toEqual(['spec.trafficPolicy.loadBalancer: simple and consistentHash are exclusive']);
    expect(problems({ trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', useSourceIp: true } } } })).toEqual([
      'spec.trafficPolicy.loadBalancer.consistentHash: expected exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName',
    ]);
    expect(problems({ trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', maglev: { tableSize: 65536 } } } } })).toEqual(['spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 65536 is not a prime number']);
    expect(problems({ trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x', ringHash: { minimumRingSize: 1e12 } } } } })[0]).toMatch(/ringHash\.minimumRingSize: expected an integer in \[1, 8388608\]/);
    expect(problems({ trafficPolicy: { loadBalancer: { localityLbSetting: { enabled: true } } } })).toEqual(['spec.trafficPolicy.loadBalancer.localityLbSetting: not supported by weft: ignored']);
    expect(problems({ trafficPolicy: { portLevelSettings: [{ loadBalancer: { simple: 'RANDOM' } }, { port: { number: 80 } }, { port: { number: 80 } }] } })).toEqual([
      'spec.trafficPolicy.portLevelSettings[0].port.number: required',
      'spec.trafficPolicy.portLevelSettings[2].port.number: duplicate port 80',
    ]);
  });
});
