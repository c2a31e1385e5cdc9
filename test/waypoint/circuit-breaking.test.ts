// DestinationRule connectionPool -> the cluster's circuit breakers, enforced by the waypoint as
// Envoy's HTTP/1.1 pool does (one HBONE tunnel per request is one "connection"): past the limits a
// request is answered 503, response flag UO, with Envoy's body, and counted as such in
// istio_requests_total; the pending one is served once a tunnel frees; nothing leaks afterwards.
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, client, HOST, istio, metric, stand, until, webPod, webService } from './harness.ts';

const CLUSTER = `outbound|80||${HOST}`;
const OVERFLOW = 'upstream connect error or disconnect/reset before headers. reset reason: overflow';
const pool = (connectionPool: object) => [webService(), webPod('v1'), webPod('v2'), istio('DestinationRule', 'web', { host: 'web', trafficPolicy: { connectionPool } })];

describe('waypoint circuit breaking', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('maxConnections 1 and http1MaxPendingRequests 1 under 20 concurrent slow requests: one served, one queued then served, the rest 503 UO', async () => {
    const s = await stand(cleanup, pool({ tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1, http2MaxRequests: 1 } }));
    expect(s.config.table.clusters.get(CLUSTER)?.circuit).toEqual({ maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 4_294_967_295 });
    const c = client(cleanup, s);
    const replies = await Promise.all(Array.from({ length: 20 }, () => c.request('/delay/800')));
    const ok = replies.filter((r) => r.status === 200);
    const overflow = replies.filter((r) => r.status === 503);
    expect(ok.length + overflow.length).toBe(20);
    expect(ok.length).toBeGreaterThanOrEqual(2); // the active one and the pending one
    expect(overflow.length).toBeGreaterThanOrEqual(15);
    for (const r of overflow) {
      expect(r.body).toBe(OVERFLOW);
      expect(r.headers['content-type']).toBe('text/plain');
    }
    // Never two at once upstream: the backends together saw only the requests served.
    expect(s.v1.seen.length + s.v2.seen.length).toBe(ok.length);

    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '503', response_flags: 'UO', destination_service: HOST })).toBe(overflow.length);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200', response_flags: '-' })).toBe(ok.length);
    expect(s.accessLog.filter((l) => l.response_flags === 'UO')).toHaveLength(overflow.length);
    expect(s.waypoint.balancer.circuitStats(CLUSTER)).toEqual({ connections: 0, requests: 0, pending: 0 });
    // Once idle, the cluster serves again.
    expect((await c.request('/')).status).toBe(200);
  }, 60_000);

  it('http2MaxRequests alone rejects at once (no queue): one in flight, the others 503 UO', async () => {
    const s = await stand(cleanup, pool({ http: { http2MaxRequests: 1 } }));
    const c = client(cleanup, s);
    const slow = c.request('/delay/800');
    await until(() => s.waypoint.balancer.circuitStats(CLUSTER).requests === 1, 5000, 'first request in flight');
    const rest = await Promise.all(Array.from({ length: 5 }, () => c.request('/')));
    expect(rest.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
    expect((await slow).status).toBe(200);
    expect(await metric(s.registry, 'istio_requests_total', { response_flags: 'UO' })).toBe(5);
  }, 60_000);

  it('a client that goes away while pending gives its place up', async () => {
    const s = await stand(cleanup, pool({ tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } }));
    const c = client(cleanup, s);
    const first = c.request('/delay/800');
    await until(() => s.waypoint.balancer.circuitStats(CLUSTER).connections === 1, 5000, 'first request in flight');
    const t = await c.tunnel();
    t.write('GET / HTTP/1.1\r\nhost: web\r\n\r\n');
    await until(() => s.waypoint.balancer.circuitStats(CLUSTER).pending === 1, 5000, 'second request pending');
    t.destroy();
    await until(() => s.waypoint.balancer.circuitStats(CLUSTER).pending === 0, 5000, 'pending request gone');
    // Its place is free again: another request queues instead of overflowing.
    const third = c.request('/');
    expect((await first).status).toBe(200);
    expect((await third).status).toBe(200);
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(s.waypoint.balancer.circuitStats(CLUSTER)).toEqual({ connections: 0, requests: 0, pending: 0 });
  }, 60_000);
});
