// The checks that decide a NACK: Envoy resources encoded as the control plane encodes them, with
// the shapes the waypoint must refuse (a regex that does not compile, weights adding up to 0, an
// endpoint that is not an IP, an unsupported action) named by resource and field; and the matchers
// it accepts behaving as Envoy's (path kinds, headers incl. :method and invert, query parameters).
import { describe, expect, it } from 'vitest';
import { encode } from '../../../src/control/xds/envoy/messages.ts';
import { Balancer } from '../../../src/waypoint/upstream/balancer.ts';
import { compileLoadAssignment, compileRouteConfig } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';
import { selectRoute, type RequestFacts } from '../../../src/waypoint/router/table.ts';

const RC = 'envoy.config.route.v3.RouteConfiguration';
const rc = (routes: object[]) => compileRouteConfig(decodeEnvoy(RC, encode(RC, { name: 'web:80', virtualHosts: [{ name: 'web:80', domains: ['web'], routes }] })));
const to = (cluster = 'c') => ({ cluster });
const facts = (path: string, headers: Record<string, string> = {}, method = 'GET'): RequestFacts => {
  const q = path.indexOf('?');
  return { method, path: q < 0 ? path : path.slice(0, q), query: new URLSearchParams(q < 0 ? '' : path.slice(q + 1)), headers, host: 'web' };
};

describe('waypoint xDS compile', () => {
  it('refuses what it cannot serve, naming the resource and field', () => {
    expect(() => rc([{ name: 'r', match: { safeRegex: { regex: '(' } }, route: to() }])).toThrow(/web:80.*routes\[0\] \(r\)\.match\.safe_regex/);
    expect(() => rc([{ name: 'r', match: { prefix: '/' }, route: { weightedClusters: { clusters: [{ name: 'a', weight: { value: 0 } }] } } }])).toThrow(/weights add up to 0/);
    expect(() => rc([{ name: 'r', match: { prefix: '/' }, directResponse: { status: 200, body: { filename: '/etc/passwd' } } }])).toThrow(/routes\[0\] \(r\)\.direct_response\.body: only inline_string/);
    expect(() => rc([{ name: 'r', match: { prefix: '/' }, route: { clusterHeader: 'x-cluster' } }])).toThrow(/needs cluster or weighted_clusters/);
    expect(() => rc([{ name: 'r', match: { safeRegex: { regex: 'a'.repeat(2000) } }, route: to() }])).toThrow(/longer than 1024/);
    const CLA = 'envoy.config.endpoint.v3.ClusterLoadAssignment';
    const cla = (address: string, portValue: number) =>
      compileLoadAssignment(decodeEnvoy(CLA, encode(CLA, { clusterName: 'c', endpoints: [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address, portValue } } } }] }] })));
    expect(() => cla('evil.example', 80)).toThrow(/ClusterLoadAssignment c: endpoints\[0\]\.lb_endpoints\[0\]\.endpoint\.address: evil\.example is not an IP/);
    expect(() => cla('10.0.0.1', 0)).toThrow(/port_value/);
    expect(cla('10.0.0.1', 8080).endpoints).toEqual([{ address: '10.0.0.1', port: 8080 }]);
  });

  it('matches paths, headers (with :method and invert) and query parameters as Envoy does, first route wins', () => {
    const table = rc([
      { name: 'exact', match: { path: '/a' }, route: to() },
      { name: 'regex', match: { safeRegex: { regex: '/items/[0-9]+' } }, route: to() },
      { name: 'post', match: { prefix: '/', headers: [{ name: ':method', stringMatch: { exact: 'POST' } }] }, route: to() },
      { name: 'not-beta', match: { prefix: '/b', headers: [{ name: 'x-beta', presentMatch: true, invertMatch: true }] }, route: to() },
      { name: 'query', match: { prefix: '/', queryParameters: [{ name: 'v', stringMatch: { exact: '2' } }] }, route: to() },
      { name: 'ci', match: { prefix: '/CASE', caseSensitive: { value: false } }, route: to() },
    ]);
    const vh = table.virtualHosts[0]!;
    const name = (f: RequestFacts) => selectRoute(vh, f)?.name;
    expect(name(facts('/a'))).toBe('exact');
    expect(name(facts('/a/b'))).toBeUndefined();
    expect(name(facts('/items/42'))).toBe('regex');
    expect(name(facts('/items/42x'))).toBeUndefined(); // full match, as RE2's
    expect(name(facts('/anything', {}, 'POST'))).toBe('post');
    expect(name(facts('/b'))).toBe('not-beta');
    expect(name(facts('/b', { 'x-beta': '1' }))).toBeUndefined();
    expect(name(facts('/x?v=2'))).toBe('query');
    expect(name(facts('/x?v=3'))).toBeUndefined();
    expect(name(facts('/case/x'))).toBe('ci');
  });

  it('splits by weight and round-robins endpoints', () => {
    const table = rc([{ name: 'w', match: { prefix: '/' }, route: { weightedClusters: { clusters: [{ name: 'a', weight: { value: 90 } }, { name: 'b', weight: { value: 10 } }] } } }]);
    const route = table.virtualHosts[0]!.routes[0]!;
    const seq = [0, 0.899, 0.9, 0.999];
    let i = 0;
    const b = new Balancer(() => seq[i++]!);
    expect(seq.map(() => b.cluster(route).name)).toEqual(['a', 'a', 'b', 'b']);
    const eps = [{ address: '10.0.0.1', port: 1 }, { address: '10.0.0.2', port: 1 }];
    expect([1, 2, 3].map(() => b.endpoint('a', eps)!.address)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.1']);
  });
});
