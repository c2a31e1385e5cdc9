// Local rate limits at the waypoint, end to end (harness.ts: a real control plane translating
// Envoy Gateway's BackendTrafficPolicy, the waypoint, HBONE with real certificates): a route's
// limit answers Envoy's 429 "local_rate_limited" with x-ratelimit-* headers and response flag RL
// (Istio metrics, access log), tokens come back after the fill interval, another route is not
// limited, a limit per distinct source identity (weft's `sourcePrincipal` selector: the peer's
// SPIFFE id from the tunnel's mutual TLS, as Envoy's metadata action on istio_authn
// source.principal) gives each client its own bucket, header selectors (Exact, Distinct) pick their
// buckets, buckets survive a routing table swap that keeps the limit, and a flood of distinct
// header values keeps at most the configured number of buckets. The compile checks refuse what
// the waypoint cannot enforce, naming the field.
import { afterEach, describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { encode } from '../../src/control/xds/envoy/messages.ts';
import { compileRouteConfig } from '../../src/waypoint/xds/compile.ts';
import { decodeEnvoy } from '../../src/waypoint/xds/envoy.ts';
import { RateLimiter } from '../../src/waypoint/filters/rate-limit.ts';
import { gateway } from '../control/xds/envoy/harness.ts';
import { spiffe } from '../hbone/harness.ts';
import { Cleanup, client, metric, NS, stand, until, webPod, webService, type Reply, type Stand } from './harness.ts';

const base = () => [webService(), webPod('v1'), webPod('v2')];

/** An HTTPRoute on Service web: one rule for `prefix`. */
const route = (name: string, prefix: string): KObject =>
  gateway('HTTPRoute', name, { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ matches: [{ path: { type: 'PathPrefix', value: prefix } }], backendRefs: [{ name: 'web', port: 80 }] }] });

const policy = (name: string, target: string, rules: object[]): KObject => ({
  apiVersion: 'gateway.envoyproxy.io/v1alpha1', kind: 'BackendTrafficPolicy', metadata: { name, namespace: NS },
  spec: { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: target }], rateLimit: { type: 'Local', local: { rules } } },
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const statuses = (replies: Reply[]) => replies.map((r) => r.status);
const count = (replies: Reply[], status: number) => replies.filter((r) => r.status === status).length;

/** A client of the stand under another workload identity. */
async function clientAs(cleanup: Cleanup, s: Stand, sa: string) {
  return client(cleanup, { ...s, clientCreds: await s.ca.issue(NS, sa) });
}

describe('waypoint local rate limit', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('answers 429 local_rate_limited beyond 10 requests/s with RL in metrics and log, refills after a second, and leaves another route alone', async () => {
    const s = await stand(cleanup, [...base(), route('limited', '/limited'), route('free', '/free'), policy('ten', 'limited', [{ limit: { requests: 10, unit: 'Second' } }])]);
    const c = client(cleanup, s);
    const N = 30;
    const start = performance.now();
    const replies = await Promise.all(Array.from({ length: N }, () => c.request('/limited')));
    const elapsed = performance.now() - start;
    const passed = count(replies, 200);
    const limited = count(replies, 429);
    expect(passed + limited).toBe(N);
    // The bucket holds 10 and gets 10 more each second: a burst inside one second passes exactly 10.
    if (elapsed < 1000) expect(passed).toBe(10);
    else {
      expect(passed).toBeGreaterThanOrEqual(10);
      expect(passed).toBeLessThanOrEqual(10 * (1 + Math.ceil(elapsed / 1000)));
    }
    const rl = replies.find((r) => r.status === 429)!;
    expect(rl.body).toBe('local_rate_limited');
    expect(rl.headers).toMatchObject({ 'x-ratelimit-limit': '10', 'x-ratelimit-remaining': '0', 'content-type': 'text/plain' });
    expect(rl.headers['x-ratelimit-reset']).toMatch(/^[01]$/);
    const ok = replies.find((r) => r.status === 200)!;
    expect(JSON.parse(ok.body)).toMatchObject({ url: '/limited' });
    expect(ok.headers['x-ratelimit-limit']).toBe('10');

    // Another route of the same service has no limit.
    const free = await Promise.all(Array.from({ length: N }, () => c.request('/free')));
    expect(statuses(free)).toEqual(Array<number>(N).fill(200));
    expect(free[0]!.headers['x-ratelimit-limit']).toBeUndefined();

    // Istio's series and the access log say RL for exactly the limited requests.
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(await metric(s.registry, 'istio_requests_total', { reporter: 'waypoint', response_code: '429', response_flags: 'RL', source_principal: spiffe(NS, 'client') })).toBe(limited);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200', response_flags: '-' })).toBe(passed + N);
    const logged = s.accessLog.filter((l) => l.response_flags === 'RL');
    expect(logged).toHaveLength(limited);
    expect(logged[0]).toMatchObject({ response_code: 429, response_code_details: 'local_rate_limited', path: '/limited', route_name: expect.stringContaining('matches[0]') });
    expect(logged[0]!.upstream_host).toBeUndefined();

    // Tokens come back after the fill interval (waited for, not timed).
    await sleep(1100);
    expect((await c.request('/limited')).status).toBe(200);
  }, 60_000);

  it('gives each source identity its own bucket (sourcePrincipal Distinct), and limits one identity alone (Exact)', async () => {
    const s = await stand(cleanup, [
      ...base(), route('per-client', '/per-client'), route('vip', '/vip'),
      policy('each', 'per-client', [{ clientSelectors: [{ sourcePrincipal: { type: 'Distinct' } }], limit: { requests: 5, unit: 'Hour' } }]),
      policy('one', 'vip', [{ clientSelectors: [{ sourcePrincipal: { type: 'Exact', value: spiffe(NS, 'client2') } }], limit: { requests: 2, unit: 'Hour' } }]),
    ]);
    const a = client(cleanup, s);
    const b = await clientAs(cleanup, s, 'client2');
    const send = async (c: typeof a, path: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await c.request(path)).status);
      return out;
    };
    expect(await send(a, '/per-client', 8)).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    // client2 is not limited by client's exhaustion.
    expect(await send(b, '/per-client', 8)).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    expect(await send(a, '/per-client', 1)).toEqual([429]);
    // Only client2 matches the Exact selector; client falls to the default bucket (none: no limit).
    expect(await send(b, '/vip', 4)).toEqual([200, 200, 429, 429]);
    expect(await send(a, '/vip', 6)).toEqual([200, 200, 200, 200, 200, 200]);
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(await metric(s.registry, 'istio_requests_total', { response_flags: 'RL', source_principal: spiffe(NS, 'client2') })).toBe(3 + 2);
    expect(await metric(s.registry, 'istio_requests_total', { response_flags: 'RL', source_principal: spiffe(NS, 'client') })).toBe(3 + 1);
  }, 60_000);

  it('selects by header: Distinct values each get a bucket, an Exact value shares one, the rest take the default', async () => {
    const s = await stand(cleanup, [
      ...base(), route('api', '/api'),
      policy('headers', 'api', [
        { limit: { requests: 4, unit: 'Hour' } },
        { clientSelectors: [{ headers: [{ name: 'x-user', type: 'Distinct' }] }], limit: { requests: 3, unit: 'Hour' } },
        { clientSelectors: [{ headers: [{ name: 'x-plan', value: 'free' }] }], limit: { requests: 2, unit: 'Hour' } },
      ]),
    ]);
    const c = client(cleanup, s);
    const send = async (n: number, headers: Record<string, string>) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await c.request('/api', { headers })).status);
      return out;
    };
    expect(await send(4, { 'x-user': 'alice' })).toEqual([200, 200, 200, 429]);
    expect(await send(4, { 'x-user': 'bob' })).toEqual([200, 200, 200, 429]);
    expect(await send(3, { 'x-plan': 'free' })).toEqual([200, 200, 429]);
    // Neither selector matches: the default bucket of 4, untouched by the requests above.
    expect(await send(5, { 'x-plan': 'gold' })).toEqual([200, 200, 200, 200, 429]);
    const last = await c.request('/api', { headers: { 'x-user': 'carol' } });
    expect(last.headers).toMatchObject({ 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '2' });
  }, 60_000);

  it('keeps buckets across a routing table swap that leaves the limit as it was, and starts fresh when the limit changes', async () => {
    const objects = (other: string, requests: number) => [...base(), route('limited', '/limited'), route('other', other), policy('p', 'limited', [{ limit: { requests, unit: 'Hour' } }])];
    const s = await stand(cleanup, objects('/other', 3));
    const c = client(cleanup, s);
    for (let i = 0; i < 3; i++) expect((await c.request('/limited')).status).toBe(200);
    expect((await c.request('/limited')).status).toBe(429);
    // Another route changes: the route configuration is sent and compiled again, the limit is the same.
    let table = s.config.table;
    s.apply(objects('/changed', 3));
    await until(() => s.config.table !== table && s.config.table.routes.size > 0, 10_000, 'the new table');
    expect((await c.request('/changed')).status).toBe(200);
    expect((await c.request('/limited')).status).toBe(429);
    // The limit changes: new buckets.
    table = s.config.table;
    s.apply(objects('/changed', 5));
    await until(() => s.config.table !== table, 10_000, 'the new table');
    expect(statuses(await Promise.all(Array.from({ length: 6 }, () => c.request('/limited')))).sort()).toEqual([200, 200, 200, 200, 200, 429]);
  }, 60_000);

  it('keeps at most the configured number of buckets under a flood of distinct header values (least recently used evicted)', async () => {
    const s = await stand(cleanup, [...base(), route('api', '/api'), policy('users', 'api', [{ clientSelectors: [{ headers: [{ name: 'x-user', type: 'Distinct' }] }], limit: { requests: 1, unit: 'Hour' } }])], {
      rateLimit: { maxDynamicBuckets: 20 },
    });
    const c = client(cleanup, s);
    expect((await c.request('/api', { headers: { 'x-user': 'u0' } })).status).toBe(200);
    expect((await c.request('/api', { headers: { 'x-user': 'u0' } })).status).toBe(429);
    const N = 300;
    let next = 1;
    const flood: number[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < N) {
          const v = next++;
          // Long values too: a bucket key costs what the value costs, and there are at most 20 of them.
          flood.push((await c.request('/api', { headers: { 'x-user': `u${v}-${'x'.repeat(v % 7 === 0 ? 4000 : 10)}` } })).status);
          expect(s.waypoint.rateLimiter.stats().dynamicBuckets).toBeLessThanOrEqual(20);
        }
      }),
    );
    expect(flood).toEqual(Array<number>(N - 1).fill(200));
    expect(s.waypoint.rateLimiter.stats()).toMatchObject({ dynamicBuckets: 20 });
    // A value still among the most recent keeps its empty bucket; the first one was evicted (a fresh bucket).
    const recent = `u${N - 1}-${'x'.repeat((N - 1) % 7 === 0 ? 4000 : 10)}`;
    expect((await c.request('/api', { headers: { 'x-user': recent } })).status).toBe(429);
    expect((await c.request('/api', { headers: { 'x-user': 'u0' } })).status).toBe(200);
  }, 60_000);
});

describe('waypoint local rate limit compile', () => {
  const RC = 'envoy.config.route.v3.RouteConfiguration';
  const LRL = 'envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit';
  const any = (type: string, o: object) => ({ type_url: `type.googleapis.com/${type}`, value: Buffer.from(encode(type, o as Record<string, unknown>)) });
  const bucket = { maxTokens: 5, tokensPerFill: { value: 5 }, fillInterval: { seconds: 1 } };
  const ALL = { defaultValue: { numerator: 100, denominator: 'HUNDRED' } };
  const rc = (filter: object, rateLimits: object[] = []) =>
    compileRouteConfig(decodeEnvoy(RC, encode(RC, {
      name: 'web:80',
      virtualHosts: [{ name: 'web:80', domains: ['web'], routes: [{ name: 'r', match: { prefix: '/' }, route: { cluster: 'c', rateLimits }, typedPerFilterConfig: { 'envoy.filters.http.local_ratelimit': filter } }] }],
    })));
  const request = { method: 'GET', url: '/', host: 'web', headers: {}, remoteAddress: '10.1.2.3:5000', principal: spiffe(NS, 'a'), cluster: 'c' };

  it('refuses what it cannot enforce, naming the route and field', () => {
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: bucket, localRateLimitPerDownstreamConnection: true }))).toThrow(/routes\[0\] \(r\)\.typed_per_filter_config\[envoy\.filters\.http\.local_ratelimit\]\.local_rate_limit_per_downstream_connection/);
    expect(() => rc(any(LRL, { statPrefix: 'x' }))).toThrow(/token_bucket: missing/);
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: { ...bucket, fillInterval: { nanos: 1_000_000 } } }))).toThrow(/fill_interval: must be at least 50ms/);
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: bucket, responseHeadersToAdd: [{ header: { key: 'a', value: 'b' } }] }))).toThrow(/response_headers_to_add: not supported/);
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: bucket }), [{ actions: [{ sourceCluster: {} }] }])).toThrow(/rate_limits\[0\]\.actions\[0\]\.source_cluster: not supported/);
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: bucket }), [{ actions: [{ metadata: { descriptorKey: 'k', metadataKey: { key: 'envoy.lb', path: [{ key: 'x' }] } } }] }])).toThrow(/only the dynamic istio_authn source\.principal/);
    expect(() => rc(any(LRL, { statPrefix: 'x', tokenBucket: bucket, descriptors: [{ entries: [{ key: 'k', value: 'v' }], tokenBucket: { ...bucket, fillInterval: { nanos: 500_000_000 } } }] }))).toThrow(/not a multiple of the default/);
    expect(() => rc(any('envoy.extensions.filters.http.fault.v3.HTTPFault', {}))).toThrow(/not a LocalRateLimit/);
  });

  it('reads Envoy defaults: without filter_enabled nothing is limited; without filter_enforced it is counted, not enforced', () => {
    const limiter = new RateLimiter();
    const off = rc(any(LRL, { statPrefix: 'x', tokenBucket: { ...bucket, maxTokens: 1 } })).virtualHosts[0]!.routes[0]!.rateLimit!;
    expect([1, 2, 3].map(() => limiter.check(off, request).limited)).toEqual([false, false, false]);
    const shadow = rc(any(LRL, { statPrefix: 'y', tokenBucket: { ...bucket, maxTokens: 1 }, filterEnabled: ALL })).virtualHosts[0]!.routes[0]!.rateLimit!;
    expect([1, 2, 3].map(() => limiter.check(shadow, request).limited)).toEqual([false, false, false]);
    const on = rc(any(LRL, { statPrefix: 'z', tokenBucket: { ...bucket, maxTokens: 1 }, filterEnabled: ALL, filterEnforced: ALL })).virtualHosts[0]!.routes[0]!.rateLimit!;
    expect([1, 2, 3].map(() => limiter.check(on, request).limited)).toEqual([false, true, true]);
    // A FilterConfig that disables the filter on the route: no limit, as written.
    expect(rc(any('envoy.config.route.v3.FilterConfig', { config: any(LRL, { statPrefix: 'x', tokenBucket: bucket }), disabled: true })).virtualHosts[0]!.routes[0]!.rateLimit).toBeUndefined();
  });

  it('matches sourceCIDR descriptors by the masked address, and refills by the fill interval', () => {
    let now = 0;
    const limiter = new RateLimiter({ now: () => now });
    const rl = rc(any(LRL, {
      statPrefix: 'x', tokenBucket: bucket, filterEnabled: ALL, filterEnforced: ALL, alwaysConsumeDefaultTokenBucket: { value: false },
      descriptors: [{ entries: [{ key: 'masked_remote_address', value: '10.0.0.0/8' }, { key: 'remote_address' }], tokenBucket: { maxTokens: 1, tokensPerFill: { value: 1 }, fillInterval: { seconds: 2 } } }],
    }), [{ actions: [{ maskedRemoteAddress: { v4PrefixMaskLen: { value: 8 } } }, { remoteAddress: {} }] }]).virtualHosts[0]!.routes[0]!.rateLimit!;
    const from = (remoteAddress: string) => limiter.check(rl, { ...request, remoteAddress }).limited;
    expect([from('10.1.2.3:1'), from('10.1.2.3:2'), from('10.9.9.9:1'), from('10.9.9.9:1')]).toEqual([false, true, false, true]);
    // Outside 10/8: the default bucket of 5.
    expect([1, 2, 3, 4, 5, 6].map(() => from('192.168.0.1:1'))).toEqual([false, false, false, false, false, true]);
    now = 1999;
    expect(from('10.1.2.3:1')).toBe(true);
    now = 2000;
    expect(from('10.1.2.3:1')).toBe(false);
  });
});
