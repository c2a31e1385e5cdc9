// A Cluster's lb policy, circuit breakers and outlier detection and a route's hash_policy, encoded as
// the control plane encodes them, compiled as the waypoint does: Envoy's defaults filled in, what
// it cannot act on refused with the resource and field named (huge ring sizes, a table size that is
// not prime, success-rate ejection left on, unknown policies); and the hash tables built at the
// limits stay balanced and quick to build.
import { describe, expect, it } from 'vitest';
import { encode } from '../../../src/control/xds/envoy/messages.ts';
import { requestHash, cookieValue } from '../../../src/waypoint/router/hash-key.ts';
import { endpointKey, maglev, ringHash } from '../../../src/waypoint/upstream/hash.ts';
import { compileCluster, compileRouteConfig } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';

const CL = 'envoy.config.cluster.v3.Cluster';
const cluster = (extra: object) => compileCluster(decodeEnvoy(CL, encode(CL, { name: 'c', type: 'EDS', edsClusterConfig: { serviceName: 'c' }, ...extra })));
const RC = 'envoy.config.route.v3.RouteConfiguration';
const routeHash = (hashPolicy: object[]) =>
  compileRouteConfig(decodeEnvoy(RC, encode(RC, { name: 'web:80', virtualHosts: [{ name: 'web:80', domains: ['web'], routes: [{ name: 'r', match: { prefix: '/' }, route: { cluster: 'c', hashPolicy } }] }] }))).virtualHosts[0]!.routes[0]!.hashPolicies;

describe('cluster policy compile', () => {
  it("fills in Envoy's defaults", () => {
    expect(cluster({})).toMatchObject({ lb: { kind: 'ROUND_ROBIN' }, panicThreshold: 50 });
    expect(cluster({}).circuit).toBeUndefined();
    expect(cluster({ circuitBreakers: { thresholds: [{ maxRequests: { value: 7 } }] } }).circuit).toEqual({ maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 7, maxRetries: 3 });
    expect(cluster({ lbPolicy: 'RING_HASH' }).lb).toEqual({ kind: 'RING_HASH', minimumRingSize: 1024, maximumRingSize: 8_388_608 });
    expect(cluster({ lbPolicy: 'MAGLEV' }).lb).toEqual({ kind: 'MAGLEV', tableSize: 65_537 });
    expect(cluster({ lbPolicy: 'LEAST_REQUEST' }).lb).toEqual({ kind: 'LEAST_REQUEST', choiceCount: 2 });
    expect(cluster({ outlierDetection: { enforcingSuccessRate: { value: 0 } } }).outlier).toEqual({
      intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 10, alwaysEjectOneHost: false,
      consecutive5xx: 5, enforcingConsecutive5xx: 100, consecutiveGatewayFailure: 5, enforcingConsecutiveGatewayFailure: 0,
      failurePercentageThreshold: 85, enforcingFailurePercentage: 0, failurePercentageMinimumHosts: 5, failurePercentageRequestVolume: 50,
    });
  });

  it('honours failure-percentage ejection only without a consecutive detector (the control plane adds it for gRPC next to them)', () => {
    const fp = { enforcingSuccessRate: { value: 0 }, enforcingFailurePercentage: { value: 100 }, failurePercentageThreshold: { value: 50 }, failurePercentageRequestVolume: { value: 3 }, failurePercentageMinimumHosts: { value: 1 } };
    expect(cluster({ outlierDetection: { ...fp, consecutive_5xx: { value: 3 } } }).outlier).toMatchObject({ consecutive5xx: 3, enforcingFailurePercentage: 0 });
    expect(cluster({ outlierDetection: { ...fp, consecutiveGatewayFailure: { value: 3 } } }).outlier).toMatchObject({ enforcingFailurePercentage: 0 });
    expect(cluster({ outlierDetection: fp }).outlier).toMatchObject({ enforcingFailurePercentage: 100, failurePercentageThreshold: 50, failurePercentageRequestVolume: 3, failurePercentageMinimumHosts: 1 });
  });

  it('refuses what it cannot act on as Envoy would, naming the field', () => {
    expect(() => cluster({ lbPolicy: 'RING_HASH', ringHashLbConfig: { minimumRingSize: { value: 1e12 } } })).toThrow(/Cluster c\.ring_hash_lb_config\.minimum_ring_size: 1000000000000 is not in/);
    expect(() => cluster({ lbPolicy: 'MAGLEV', maglevLbConfig: { tableSize: { value: 65_536 } } })).toThrow(/Cluster c\.maglev_lb_config\.table_size: 65536 is not a prime/);
    expect(() => cluster({ lbPolicy: 'MAGLEV', maglevLbConfig: { tableSize: { value: 4_294_967_291 } } })).toThrow(/table_size/);
    expect(() => cluster({ lbPolicy: 'CLUSTER_PROVIDED' })).toThrow(/Cluster c\.lb_policy: CLUSTER_PROVIDED is not supported/);
    expect(() => cluster({ outlierDetection: {} })).toThrow(/outlier_detection\.enforcing_success_rate: success-rate ejection is not supported/);
    expect(() => cluster({ lbPolicy: 'LEAST_REQUEST', leastRequestLbConfig: { choiceCount: { value: 1_000_000 } } })).toThrow(/choice_count/);
    expect(() => routeHash([{ filterState: { key: 'x' } }])).toThrow(/routes\[0\] \(r\)\.route\.hash_policy\[0\]: no policy specifier/);
    expect(() => routeHash([{ cookie: { name: 'a b' } }])).toThrow(/hash_policy\[0\]\.cookie\.name/);
    expect(() => routeHash([{ header: { headerName: '' } }])).toThrow(/header_name: empty/);
  });

  it('compiles hash policies, and evaluates them as Envoy (rotate-xor, terminal, none found means no hash)', () => {
    const policies = routeHash([{ header: { headerName: 'X-User' }, terminal: true }, { queryParameter: { name: 'u' } }, { connectionProperties: { sourceIp: true } }])!;
    expect(policies).toEqual([{ terminal: true, header: 'x-user' }, { terminal: false, query: 'u' }, { terminal: false, sourceIp: true }]);
    const facts = (headers: Record<string, string>, query = '') => ({ method: 'GET', path: '/', query: new URLSearchParams(query), headers, host: 'web' });
    const a = requestHash(policies, facts({ 'x-user': 'a' }), '10.0.0.9:1234').hash;
    expect(requestHash(policies, facts({ 'x-user': 'a' }, 'u=1'), '10.0.0.8:1').hash).toBe(a); // terminal: nothing after it counts
    const noHeader = requestHash(policies, facts({}, 'u=1'), '10.0.0.9:5');
    expect(requestHash(policies, facts({}, 'u=1'), '10.0.0.9:6').hash).toBe(noHeader.hash); // the port is not part of the source IP
    expect(requestHash(policies, facts({}, 'u=1'), '10.0.0.7:6').hash).not.toBe(noHeader.hash);
    expect(requestHash([{ terminal: false, header: 'x' }], facts({}), '').hash).toBeUndefined();
    expect(cookieValue(['a=1; session="abc"', 'b=2'], 'session')).toBe('abc');
    expect(cookieValue('sessionx=1', 'session')).toBeUndefined();
    // A session cookie (ttl 0) has no Max-Age; no ttl: none is generated.
    expect(requestHash([{ terminal: false, cookie: { name: 's', ttlMs: 0 } }], facts({}), '1.2.3.4:5').setCookie).toMatch(/^s="[0-9a-f]{16}"; HttpOnly$/);
    expect(requestHash([{ terminal: false, cookie: { name: 's' } }], facts({}), '1.2.3.4:5')).toEqual({});
  });

  it('builds rings and Maglev tables at the limits, balanced over the endpoints', () => {
    const eps = Array.from({ length: 10 }, (_, i) => ({ address: `10.0.0.${i}`, port: 80 }));
    for (const table of [ringHash(eps, 8_388_608, 8_388_608), ringHash(eps, 1024, 8_388_608), maglev(eps, 5_000_011), maglev(eps, 65_537)]) {
      const counts = new Array<number>(eps.length).fill(0);
      for (let k = 0; k < 20_000; k++) counts[table.lookup((Math.imul(k, 2654435761) >>> 0))]!++;
      for (const n of counts) expect(n / 20_000).toBeGreaterThan(0.05);
    }
    // One endpoint less moves few keys besides its own (the ring's points per endpoint change, as in Envoy).
    const before = ringHash(eps, 1024, 8_388_608);
    const after = ringHash(eps.slice(1), 1024, 8_388_608);
    let moved = 0;
    for (let k = 0; k < 10_000; k++) {
      const h = Math.imul(k, 2654435761) >>> 0;
      const was = eps[before.lookup(h)]!;
      if (endpointKey(was) !== endpointKey(eps[0]!) && endpointKey(eps.slice(1)[after.lookup(h)]!) !== endpointKey(was)) moved++;
    }
    expect(moved / 10_000).toBeLessThan(0.15);
  });
});
