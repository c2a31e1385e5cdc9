// Proxyless gRPC conformance: weft's Envoy v3 xDS consumed by @grpc/grpc-js-xds, an independent
// client, with real gRPC servers as the pods. Each test has its own control plane and bootstrap.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { encode, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { Cleanup, controlPlane, echoServer, gateway, host, istio, pod, service, tally, until, xdsClient, type ControlPlane } from './harness.ts';

describe('proxyless gRPC over weft xDS', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  /** echo-v1 and echo-v2 behind Service "echo", with subsets v1 and v2. */
  async function twoVersions(cp: ControlPlane, extra: Parameters<ControlPlane['apply']>[0] = []) {
    const v1 = await echoServer(cleanup, 'echo-v1');
    const v2 = await echoServer(cleanup, 'echo-v2');
    const base = [
      service('echo'), pod('echo', v1, { version: 'v1' }), pod('echo', v2, { version: 'v2' }),
      istio('DestinationRule', 'echo', { host: 'echo', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] }),
    ];
    const built = cp.apply([...base, ...extra]);
    expect(built.problems).toEqual([]);
    return { v1, v2, base };
  }

  it('reaches every ready endpoint of a service (LEAST_REQUEST falls back to round_robin in gRPC)', async () => {
    const cp = await controlPlane(cleanup);
    const a = await echoServer(cleanup, 'echo-a');
    const b = await echoServer(cleanup, 'echo-b');
    const unready = pod('echo', await echoServer(cleanup, 'echo-unready'));
    unready.status!.conditions = [{ type: 'Ready', status: 'False' }];
    cp.apply([service('echo'), pod('echo', a), pod('echo', b), unready, istio('DestinationRule', 'echo', { host: 'echo', trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } } })]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    const counts = await tally(call, 20);
    expect(Object.keys(counts).sort()).toEqual(['echo-a', 'echo-b']);
    expect(counts['echo-a']! + counts['echo-b']!).toBe(20);
    expect(Math.min(counts['echo-a']!, counts['echo-b']!)).toBeGreaterThanOrEqual(8); // round robin once both connect
  });

  it('splits traffic by VirtualService weights (80/20)', async () => {
    const cp = await controlPlane(cleanup);
    await twoVersions(cp, [istio('VirtualService', 'echo', { hosts: ['echo'], http: [{ route: [{ destination: { host: 'echo', subset: 'v1' }, weight: 80 }, { destination: { host: 'echo', subset: 'v2' }, weight: 20 }] }] })]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    const n = 500;
    const counts = await tally(call, n);
    expect((counts['echo-v1'] ?? 0) + (counts['echo-v2'] ?? 0)).toBe(n);
    // 5 standard deviations of a binomial(500, 0.8) is about 0.09.
    expect(counts['echo-v1']! / n).toBeGreaterThan(0.71);
    expect(counts['echo-v1']! / n).toBeLessThan(0.89);
  });

  it('splits traffic by GRPCRoute backend weights (GAMMA)', async () => {
    const cp = await controlPlane(cleanup);
    const a = await echoServer(cleanup, 'echo-a');
    const b = await echoServer(cleanup, 'echo-b');
    const built = cp.apply([
      service('echo'), service('echo-a'), service('echo-b'), pod('echo-a', a), pod('echo-b', b),
      gateway('GRPCRoute', 'echo', { parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 50051 }], rules: [{ backendRefs: [{ name: 'echo-a', port: 50051, weight: 3 }, { name: 'echo-b', port: 50051, weight: 1 }] }] }),
    ]);
    expect(built.problems).toEqual([]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    const counts = await tally(call, 400);
    expect(counts['echo-a']! / 400).toBeGreaterThan(0.65);
    expect(counts['echo-a']! / 400).toBeLessThan(0.85);
    expect(counts['echo-a']! + counts['echo-b']!).toBe(400);
  });

  it('routes a header match to a subset', async () => {
    const cp = await controlPlane(cleanup);
    await twoVersions(cp, [
      istio('VirtualService', 'echo', {
        hosts: ['echo'],
        http: [
          { match: [{ headers: { 'end-user': { exact: 'jason' } } }], route: [{ destination: { host: 'echo', subset: 'v2' } }] },
          { route: [{ destination: { host: 'echo', subset: 'v1' } }] },
        ],
      }),
    ]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    expect(await tally(() => call({ 'end-user': 'jason' }), 10)).toEqual({ 'echo-v2': 10 });
    expect(await tally(() => call({ 'end-user': 'mary' }), 10)).toEqual({ 'echo-v1': 10 });
    expect(await tally(() => call(), 10)).toEqual({ 'echo-v1': 10 });
  });

  it('injects a fault delay', async () => {
    const cp = await controlPlane(cleanup);
    await twoVersions(cp, [istio('VirtualService', 'echo', { hosts: ['echo'], http: [{ fault: { delay: { fixedDelay: '400ms', percentage: { value: 100 } } }, route: [{ destination: { host: 'echo' } }] }] })]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    await call(); // the first call also waits for xDS; time the ones after it
    for (let i = 0; i < 3; i++) {
      const r = await call();
      expect(r.code).toBe(grpc.status.OK);
      expect(r.ms).toBeGreaterThanOrEqual(390);
    }
  });

  it('injects a fault abort with a gRPC status', async () => {
    const cp = await controlPlane(cleanup);
    const { v1, v2 } = await twoVersions(cp, [istio('VirtualService', 'echo', { hosts: ['echo'], http: [{ fault: { abort: { grpcStatus: 'PERMISSION_DENIED', percentage: { value: 100 } } }, route: [{ destination: { host: 'echo' } }] }] })]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    expect(await tally(call, 5)).toEqual({ PERMISSION_DENIED: 5 });
    expect(v1.calls + v2.calls).toBe(0); // aborted in the client, never sent
  });

  it('retries a flaky endpoint by the route retry policy', async () => {
    const cp = await controlPlane(cleanup);
    // Fails three attempts out of four: only a policy with 3 retries gets every call through.
    const flaky = await echoServer(cleanup, 'flaky', (n) => (n % 4 !== 0 ? grpc.status.UNAVAILABLE : undefined));
    const vs = (attempts: number) => istio('VirtualService', 'flaky', { hosts: ['flaky'], http: [{ retries: { attempts, retryOn: 'unavailable' }, route: [{ destination: { host: 'flaky' } }] }] });
    cp.apply([service('flaky'), pod('flaky', flaky), vs(0)]);
    const { call } = xdsClient(cleanup, cp, host('flaky'));
    expect((await call()).code).toBe(grpc.status.UNAVAILABLE);
    cp.apply([service('flaky'), pod('flaky', flaky), vs(3)]);
    // Wait until the new route is in force (a call succeeds), then every call must succeed.
    await until(async () => (await call()).code === grpc.status.OK, 10_000, 'retry policy applied');
    const before = flaky.calls;
    expect(await tally(call, 10)).toEqual({ flaky: 10 });
    expect(flaky.calls - before).toBe(40);
  });

  it('ejects a failing endpoint by outlier detection', async () => {
    const cp = await controlPlane(cleanup);
    const good = [await echoServer(cleanup, 'good-1'), await echoServer(cleanup, 'good-2')];
    const bad = await echoServer(cleanup, 'bad', () => grpc.status.INTERNAL);
    cp.apply([
      service('echo'), ...good.map((g) => pod('echo', g)), pod('echo', bad),
      istio('DestinationRule', 'echo', { host: 'echo', trafficPolicy: { outlierDetection: { consecutive5xxErrors: 3, interval: '300ms', baseEjectionTime: '60s', maxEjectionPercent: 50 } } }),
    ]);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    expect(Object.keys(await tally(call, 9)).sort()).toEqual(['INTERNAL', 'good-1', 'good-2']);
    await until(async () => !(await tally(call, 6)).INTERNAL, 15_000, 'bad endpoint ejected');
    const before = bad.calls;
    const counts = await tally(call, 30);
    expect(counts.INTERNAL).toBeUndefined();
    expect(bad.calls).toBe(before);
    expect(counts['good-1']! + counts['good-2']!).toBe(30);
  });

  it('reports a NACKed resource and keeps the last good config in force', async () => {
    const cp = await controlPlane(cleanup);
    const a = await echoServer(cleanup, 'echo-a');
    const objects = [service('echo'), pod('echo', a)];
    cp.apply(objects);
    const { call } = xdsClient(cleanup, cp, host('echo'));
    expect((await call()).server).toBe('echo-a');
    const name = host('echo');
    const good = cp.store.get(TYPE_ROUTE).get(name)!;
    // A route configuration gRPC must reject: two wildcards in one domain.
    const bad = encode('envoy.config.route.v3.RouteConfiguration', { name, virtualHosts: [{ name, domains: ['*echo*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'nowhere' } }] }] });
    cp.store.replace(TYPE_ROUTE, new Map([[name, bad]]));
    await until(() => cp.nacks.length > 0, 10_000, 'NACK');
    expect(cp.nacks[0]!.typeUrl).toBe(TYPE_ROUTE);
    expect(cp.nacks[0]!.reason).toMatch(/wildcard/);
    expect(cp.sotw.nacks).toBe(1);
    const view = cp.sotw.clients()[0]!.types[TYPE_ROUTE]!;
    expect(view.acked[name]).toBe(good.version);
    expect(view.rejected[name]).toBe(cp.store.get(TYPE_ROUTE).get(name)!.version);
    expect(await tally(call, 5)).toEqual({ 'echo-a': 5 }); // still routed by the accepted config
    // Another change elsewhere does not resend the rejected version (no NACK loop).
    const b = await echoServer(cleanup, 'echo-b');
    publishExceptRoutes(cp, [...objects, pod('echo', b)]);
    await until(async () => (await tally(call, 4))['echo-b'] === 2, 10_000, 'new endpoint');
    expect(cp.sotw.nacks).toBe(1);
    // A new valid configuration is sent and accepted, and clears the rejection.
    cp.apply([...objects, pod('echo', b), istio('VirtualService', 'echo', { hosts: ['echo'], http: [{ route: [{ destination: { host: 'echo' } }], timeout: '5s' }] })]);
    const fixed = cp.store.get(TYPE_ROUTE).get(name)!.version;
    await until(() => cp.sotw.clients()[0]!.types[TYPE_ROUTE]!.acked[name] === fixed, 10_000, 'new route accepted');
    expect(cp.sotw.clients()[0]!.types[TYPE_ROUTE]!.rejected).toEqual({});
    expect(cp.sotw.nacks).toBe(1);
  });
});

function publishExceptRoutes(cp: ControlPlane, objects: Parameters<ControlPlane['apply']>[0]) {
  const routes = new Map([...cp.store.get(TYPE_ROUTE)].map(([n, r]) => [n, r.body]));
  cp.apply(objects);
  cp.store.replace(TYPE_ROUTE, routes);
}
