// Retries, timeouts and fault injection through the waypoint, from VirtualService and HTTPRoute
// objects over the real control plane, with Envoy's behaviour as the reference: retries on 5xx, on
// a gRPC status, on a refused connection (to the other endpoint) and on per-try timeouts; the route
// timeout over every attempt; URX when retries run out; delays (DI) and aborts (FI) at their
// percentages with Envoy's body, gRPC aborts as trailers-only; a fault the waypoint cannot serve
// NACKed; and a request body past the replay bound is neither kept nor retried.
import { afterEach, describe, expect, it } from 'vitest';
import { any } from '../../src/control/xds/envoy/messages.ts';
import { TYPE_ROUTE } from '../../src/waypoint/xds/envoy.ts';
import { Cleanup, client, editRoutes, evenly, gateway, istio, metric, NS, seeded, stand, subsets, until, webPod, webService, type Stand } from './harness.ts';

const v1 = [{ destination: { host: 'web', subset: 'v1' } }];
const all = [{ destination: { host: 'web' } }];
const prefix = (p: string) => [{ uri: { prefix: p } }];

const routes = () =>
  istio('VirtualService', 'web', {
    hosts: ['web'],
    http: [
      { name: 'flaky', match: prefix('/flaky'), route: all, retries: { attempts: 3, retryOn: '5xx' } },
      { name: 'grpc-flaky', match: prefix('/grpc-flaky'), route: v1, retries: { attempts: 1, retryOn: 'unavailable' } },
      { name: 'per-try', match: prefix('/sometimes-slow'), route: v1, retries: { attempts: 1, retryOn: 'reset', perTryTimeout: '200ms' } },
      { name: 'exhausted', match: prefix('/slow/try'), route: v1, retries: { attempts: 2, retryOn: 'gateway-error', perTryTimeout: '100ms' } },
      { name: 'bounded', match: prefix('/slow/bounded'), timeout: '500ms', route: v1, retries: { attempts: 10, retryOn: '5xx', perTryTimeout: '200ms' } },
      { name: 'fail', match: prefix('/fail'), route: v1, retries: { attempts: 3, retryOn: '5xx' } },
      { name: 'any', match: prefix('/any'), route: all },
      { name: 'abort', match: prefix('/abort'), route: v1, fault: { abort: { httpStatus: 418, percentage: { value: 50 } } } },
      { name: 'delay', match: prefix('/delay'), route: v1, fault: { delay: { fixedDelay: '200ms', percentage: { value: 100 } } } },
      { name: 'both', match: prefix('/both'), route: v1, fault: { delay: { fixedDelay: '200ms', percentage: { value: 100 } }, abort: { httpStatus: 503, percentage: { value: 100 } } } },
      { name: 'grpc-abort', match: prefix('/grpc-abort'), route: v1, fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 100 } } } },
      { name: 'rest', route: v1 },
    ],
  });

const base = () => [webService(), webPod('v1'), webPod('v2'), subsets()];
const idle = (s: Stand) => until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
const seenAt = (s: Stand, path: string) => [...s.v1.seen, ...s.v2.seen].filter((x) => x.url.startsWith(path));
const GRPC = { 'content-type': 'application/grpc' };

describe('waypoint retries and timeouts', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('gets at least 99% through a backend failing half its requests with 503, retrying 5xx 3 times', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(1) });
    const c = client(cleanup, s);
    // One request at a time: each backend fails exactly every other request it sees.
    const N = 300;
    let ok = 0;
    for (let i = 0; i < N; i++) if ((await c.request('/flaky')).status === 200) ok++;
    expect(ok / N).toBeGreaterThanOrEqual(0.99);
    // Half the attempts failed: the backends saw about twice the requests, and every 503 stayed inside the waypoint.
    expect(seenAt(s, '/flaky').length).toBeGreaterThan(1.5 * N);
    await idle(s);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '503' })).toBe(N - ok);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200', response_flags: '-' })).toBe(ok);
  }, 60_000);

  it('retries a refused connection on the other endpoint (the mesh default policy), and a gRPC UNAVAILABLE by retryOn unavailable', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(2) });
    const c = client(cleanup, s);
    s.v2.hbone.decide = async () => ({ status: 401, reason: 'refused for the test' });
    for (let i = 0; i < 10; i++) expect(await c.pod('/any')).toBe('web-v1');
    await idle(s);
    expect(s.accessLog.filter((l) => l.route_name === 'any').map((l) => l.response_flags)).toEqual(Array(10).fill('-'));

    // Every other call answers grpc-status 14 (trailers-only); one retry on `unavailable` hides it.
    for (let i = 0; i < 4; i++) {
      const r = await c.request('/grpc-flaky', { headers: GRPC });
      expect(r.headers['grpc-status']).toBeUndefined();
      expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1' });
    }
    expect(seenAt(s, '/grpc-flaky')).toHaveLength(8);
  });

  it('retries an attempt past its per-try timeout, and answers 504 UT,URX when every attempt times out', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(3) });
    const c = client(cleanup, s);
    // Every other request to v1 takes 2 s: the 200 ms per-try timeout cuts it and the retry is fast.
    for (let i = 0; i < 3; i++) {
      const r = await c.request('/sometimes-slow');
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1' });
    }
    expect(seenAt(s, '/sometimes-slow')).toHaveLength(6);

    const r = await c.request('/slow/try');
    expect(r.status).toBe(504);
    expect(r.body).toBe('upstream request timeout');
    expect(seenAt(s, '/slow/try')).toHaveLength(3);
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ route_name: 'exhausted', response_code: 504, response_flags: 'UT,URX' });
  });

  it('answers 504 UT at the route timeout, which covers every attempt and connecting', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(4) });
    const c = client(cleanup, s);
    const start = Date.now();
    const r = await c.request('/slow/bounded');
    expect(r.status).toBe(504);
    expect(Date.now() - start).toBeGreaterThanOrEqual(500);
    // 10 retries of 200 ms each were allowed; the 500 ms route timeout leaves room for 3 attempts at most.
    expect(seenAt(s, '/slow/bounded').length).toBeLessThanOrEqual(3);
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ route_name: 'bounded', response_code: 504, response_flags: 'UT' });
    await until(() => s.v1.hbone.hbone.stats().streams === 0, 5000, 'the upstream tunnels closed');
    // An endpoint whose agent never answers the CONNECT: the route timeout covers connecting too.
    s.v1.hbone.decide = () => new Promise(() => {});
    const hung = await c.request('/slow/bounded');
    expect(hung.status).toBe(504);
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ route_name: 'bounded', response_code: 504, response_flags: 'UT' });
  });

  it('applies HTTPRoute retry (codes, attempts) and timeouts.request', async () => {
    const parentRefs = [{ group: '', kind: 'Service', name: 'web', port: 80 }];
    const backendRefs = [{ name: 'web', port: 80 }];
    const hr = gateway('HTTPRoute', 'web', {
      parentRefs,
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/flaky' } }], backendRefs, retry: { codes: [503], attempts: 2 } },
        { matches: [{ path: { type: 'PathPrefix', value: '/slow' } }], backendRefs, timeouts: { request: '300ms' } },
        { matches: [{ path: { type: 'PathPrefix', value: '/fail' } }], backendRefs, retry: { codes: [500], attempts: 1 } },
      ],
    });
    const s = await stand(cleanup, [...base(), hr], { random: seeded(5) });
    const c = client(cleanup, s);
    for (let i = 0; i < 20; i++) expect((await c.request('/flaky')).status).toBe(200);
    const slow = await c.request('/slow');
    expect(slow.status).toBe(504);
    // 503 is not among this rule's codes: not retried, passed on as it came.
    const before = seenAt(s, '/fail/503').length;
    expect((await c.request('/fail/503')).status).toBe(503);
    expect(seenAt(s, '/fail/503').length - before).toBe(1);
    expect((await c.request('/fail/500')).status).toBe(500);
    expect(seenAt(s, '/fail/500')).toHaveLength(2);
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ response_code: 500, response_flags: 'URX' });
    expect(s.accessLog.find((l) => l.response_code === 504)).toMatchObject({ response_flags: 'UT' });
  });

  it('keeps at most 1 MiB of a request body for replays: a smaller body is replayed whole, a larger one is sent once and not retried', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(6) });
    const c = client(cleanup, s);
    const small = Buffer.alloc(512 * 1024, 1);
    const r = await c.request('/fail/503', { method: 'POST', body: small });
    expect(r.status).toBe(503);
    expect(seenAt(s, '/fail/503').map((x) => x.body)).toEqual(Array(4).fill(small.length));
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ response_code: 503, response_flags: 'URX' });

    const huge = Buffer.alloc(8 * 1024 * 1024, 2);
    const h = await c.request('/fail/502', { method: 'POST', body: huge });
    expect(h.status).toBe(502);
    expect(seenAt(s, '/fail/502').map((x) => x.body)).toEqual([huge.length]);
    await idle(s);
    expect(s.accessLog.at(-1)).toMatchObject({ response_code: 502, response_flags: '-' });
    expect(s.waypoint.replay.peak).toBeLessThanOrEqual(1024 * 1024);
    expect(s.waypoint.replay.held).toBe(0);
    expect(await metric(s.registry, 'istio_request_bytes_sum', { response_code: '502' })).toBe(huge.length);
  }, 30_000);
});

describe('waypoint fault injection', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('aborts 50% of requests with the configured status and Envoy body (FI), the rest reach the backend', async () => {
    // Evenly spread draws: the share aborted is the configured one, not one sample of it.
    const s = await stand(cleanup, [...base(), routes()], { random: evenly() });
    const c = client(cleanup, s);
    const N = 400;
    let aborted = 0;
    for (let i = 0; i < N; i++) {
      const r = await c.request('/abort');
      if (r.status === 418) {
        aborted++;
        expect(r.body).toBe('fault filter abort');
      } else expect(r.status).toBe(200);
    }
    expect(aborted).toBeGreaterThanOrEqual(0.45 * N);
    expect(aborted).toBeLessThanOrEqual(0.55 * N);
    expect(seenAt(s, '/abort')).toHaveLength(N - aborted);
    await idle(s);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '418', response_flags: 'FI' })).toBe(aborted);
  }, 60_000);

  it('delays by the fixed delay (DI), then aborts when both are set (DI,FI)', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    let start = Date.now();
    expect(await c.pod('/delay')).toBe('web-v1');
    expect(Date.now() - start).toBeGreaterThanOrEqual(200);
    start = Date.now();
    const r = await c.request('/both');
    expect(Date.now() - start).toBeGreaterThanOrEqual(200);
    expect([r.status, r.body]).toEqual([503, 'fault filter abort']);
    expect(seenAt(s, '/both')).toHaveLength(0);
    await idle(s);
    expect(s.accessLog.map((l) => [l.route_name, l.response_code, l.response_flags])).toEqual([
      ['delay', 200, 'DI'],
      ['both', 503, 'DI,FI'],
    ]);
  });

  it('aborts a gRPC request as Envoy does: 200 with grpc-status in the headers (trailers-only)', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    const r = await c.request('/grpc-abort', { method: 'POST', headers: GRPC, body: Buffer.alloc(5) });
    expect(r.status).toBe(200);
    expect(r.headers).toMatchObject({ 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'fault filter abort' });
    expect(r.body).toBe('');
    // An HTTP abort of a gRPC request maps its status (503 -> UNAVAILABLE).
    const both = await c.request('/both', { headers: GRPC });
    expect([both.status, both.headers['grpc-status']]).toEqual([200, '14']);
    await idle(s);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200', response_flags: 'FI', grpc_response_status: '14', request_protocol: 'grpc' })).toBe(1);
    expect(seenAt(s, '/grpc-abort')).toHaveLength(0);
  });

  it('NACKs a fault it cannot serve (header-controlled) and a retry policy with retriable headers, keeping the last good routes', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    editRoutes(s, (rs) => {
      rs.find((r) => r.name === 'rest')!.typedPerFilterConfig = {
        'envoy.filters.http.fault': any('envoy.extensions.filters.http.fault.v3.HTTPFault', { abort: { headerAbort: {}, percentage: { numerator: 100 } } }),
      };
    });
    await until(() => s.cp.nacks.length > 0, 10_000, 'the NACK');
    expect(s.cp.nacks[0]).toMatchObject({ typeUrl: TYPE_ROUTE });
    expect(s.cp.nacks[0]!.reason).toMatch(/\(rest\)\.typed_per_filter_config\["envoy\.filters\.http\.fault"\]\.abort\.header_abort: header-controlled faults are not supported/);
    editRoutes(s, (rs) => {
      const rest = rs.find((r) => r.name === 'rest')!;
      delete rest.typedPerFilterConfig;
      (rest.route as { retryPolicy: object }).retryPolicy = { retryOn: '5xx', retriableHeaders: [{ name: 'x-retry', presentMatch: true }] };
    });
    await until(() => s.cp.nacks.length > 1, 10_000, 'the second NACK');
    expect(s.cp.nacks[1]!.reason).toContain(`(rest).route.retry_policy.retriable_headers: not supported by the waypoint`);
    // The table in use is the one before either edit.
    expect(await c.pod('/')).toBe('web-v1');
    expect((await c.request('/abort')).status).toBeGreaterThan(0);
    expect(s.config.table.routes.get(`web.${NS}.svc.cluster.local:80`)!.virtualHosts[0]!.routes.find((r) => r.name === 'rest')!.fault).toBeUndefined();
  });
});
