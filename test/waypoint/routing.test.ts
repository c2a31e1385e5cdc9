// The waypoint end to end over real parts (harness.ts): routing as the control plane writes it
// from a VirtualService (a header match, a path match, a 90/10 weighted split to DestinationRule
// subsets), requests and responses streamed through HBONE both ways with the right identities,
// a resource the waypoint cannot serve NACKed with its reason while the last good table stays, and
// Istio's request metrics counting exactly what was sent (promtool-clean exposition).
import { afterEach, describe, expect, it } from 'vitest';
import { promtoolProblems } from '../telemetry/promtool.ts';
import { TYPE_ROUTE } from '../../src/waypoint/xds/envoy.ts';
import { MeshIndex } from '../../src/waypoint/mesh.ts';
import { any } from '../../src/control/xds/envoy/messages.ts';
import { Cleanup, HOST, POD_IP, TARGET_PORT, client, editRoutes, istio, metric, stand, subsets, until, webPod, webService, webSvc, workload } from './harness.ts';

const routes = (extra: object = {}) =>
  istio('VirtualService', 'web', {
    hosts: ['web'],
    http: [
      { name: 'canary', match: [{ headers: { 'x-canary': { exact: 'yes' } } }], route: [{ destination: { host: 'web', subset: 'v2' } }] },
      { name: 'pinned', match: [{ uri: { prefix: '/v1only' } }], route: [{ destination: { host: 'web', subset: 'v1' } }] },
      { name: 'split', route: [{ destination: { host: 'web', subset: 'v1' }, weight: 90 }, { destination: { host: 'web', subset: 'v2' }, weight: 10 }], ...extra },
    ],
  });

const base = () => [webService(), webPod('v1'), webPod('v2'), subsets()];

describe('waypoint routing', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('routes a header match, a path match and a 90/10 split as written, over HBONE with the endpoints identities', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');
    expect(await c.pod('/v1only/x', { 'x-canary': 'no' })).toBe('web-v1');
    for (let i = 0; i < 20; i++) expect(await c.pod('/v1only')).toBe('web-v1');

    const N = 1000;
    const counts: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < N) {
          next++;
          const pod = await c.pod('/split');
          counts[pod] = (counts[pod] ?? 0) + 1;
        }
      }),
    );
    expect(counts['web-v1']! + counts['web-v2']!).toBe(N);
    expect(counts['web-v1']! / N).toBeGreaterThan(0.87);
    expect(counts['web-v1']! / N).toBeLessThan(0.93);

    // The destination agents saw CONNECTs from the waypoint's identity for podIP:targetPort.
    const last = s.v2.hbone.requests.at(-1)!;
    expect(last.authority).toEqual({ address: POD_IP.v2, port: TARGET_PORT });
    expect(`spiffe://${last.peer.trustDomain}/ns/${last.peer.namespace}/sa/${last.peer.serviceAccount}`).toBe(s.waypointId);
    // What the backend saw: the Host kept, a request id added, no hop-by-hop header.
    const seen = s.v1.seen.at(-1)!;
    expect(seen.headers.host).toBe('web');
    expect(seen.headers['x-request-id']).toMatch(/[0-9a-f-]{36}/);

    // Exactly the requests sent, by the labels Istio gives them.
    const total = 2 + 20 + N;
    const labels = { reporter: 'waypoint', response_code: '200', response_flags: '-', destination_service: HOST, source_principal: 'spiffe://cluster.local/ns/conf/sa/client' };
    await until(() => s.waypoint.stats().requests === 0 && s.waypoint.stats().streams === 0, 5000, 'requests and tunnels done');
    expect(s.waypoint.stats()).toMatchObject({ tunnels: 0, h2Sessions: 0 });
    await until(() => s.v1.hbone.hbone.stats().streams === 0 && s.v2.hbone.hbone.stats().streams === 0, 5000, 'upstream tunnels closed');
    c.pool.close(true);
    await until(() => s.waypoint.stats().sessions === 0, 5000, 'client sessions gone');
    expect(await metric(s.registry, 'istio_requests_total', labels)).toBe(total);
    expect(await metric(s.registry, 'istio_requests_total', { ...labels, destination_workload: 'web-v2', destination_version: 'v2', destination_principal: 'spiffe://cluster.local/ns/conf/sa/web-v2' })).toBe(1 + counts['web-v2']!);
    expect(await metric(s.registry, 'istio_request_duration_milliseconds_count', labels)).toBe(total);
    expect(await metric(s.registry, 'istio_response_bytes_count', labels)).toBe(total);
    expect(s.accessLog.filter((l) => l.response_code === 200)).toHaveLength(total);
    expect(s.accessLog.at(-1)).toMatchObject({ method: 'GET', path: '/split', response_flags: '-', route_name: 'split', original_destination: '10.96.0.20:80' });

    // promtool, if installed, finds nothing but its lint of Istio's own millisecond name.
    expect(promtoolProblems(await s.registry.metrics()) ?? []).toEqual([]);
  }, 60_000);

  it('streams bodies both ways and strips hop-by-hop headers', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    const r = await c.request('/v1only/upload', { method: 'POST', body: big, headers: { connection: 'x-secret', 'x-secret': 'drop me', 'keep-alive': 'timeout=5' } });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1', body: big.length });
    const seen = s.v1.seen.at(-1)!;
    expect(seen.headers['x-secret']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(await metric(s.registry, 'istio_request_bytes_sum', { response_code: '200' })).toBe(big.length);
  });

  it('answers 404 NR without a route, 503 UH without an endpoint, 503 UF when the endpoint refuses the tunnel', async () => {
    const only = istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'api', match: [{ uri: { prefix: '/api' } }], route: [{ destination: { host: 'web', subset: 'v1' } }] }] });
    const s = await stand(cleanup, [...base(), only]);
    const c = client(cleanup, s);
    const nr = await c.request('/other');
    expect(nr.status).toBe(404);
    expect(await c.pod('/api')).toBe('web-v1');

    // v1's pod becomes unready: its subset has no endpoint.
    const unready = webPod('v1');
    (unready as { status: { conditions: object[] } }).status.conditions = [{ type: 'Ready', status: 'False' }];
    s.apply([webService(), unready, webPod('v2'), subsets(), only]);
    await until(() => [...s.config.table.endpoints.values()].every((e) => !e.some((x) => x.address === POD_IP.v1)), 10_000, 'v1 gone from EDS');
    expect((await c.request('/api')).status).toBe(503);

    // Back, but its agent refuses the CONNECT: an upstream connect failure.
    s.apply([...base(), only]);
    await until(() => [...s.config.table.endpoints.values()].some((e) => e.some((x) => x.address === POD_IP.v1)), 10_000, 'v1 back');
    s.v1.hbone.decide = async () => ({ status: 401, reason: 'denied for the test' });
    const uf = await c.request('/api');
    expect(uf.status).toBe(503);
    expect(uf.body).toContain('connection failure');

    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '404', response_flags: 'NR' })).toBe(1);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '503', response_flags: 'UH' })).toBe(1);
    // The mesh default retry policy retried the connect failure, to no avail.
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '503', response_flags: 'UF,URX' })).toBe(1);
  }, 30_000);

  it('NACKs a route configuration it cannot serve, with the reason, and keeps routing by the last good one', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s);
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');
    // A header-controlled fault (the control plane never writes one) is refused, and with it the whole
    // route configuration: the canary route, pointed nowhere in the same edit, keeps routing.
    editRoutes(s, (rs) => {
      rs.find((r) => r.name === 'split')!.typedPerFilterConfig = {
        'envoy.filters.http.fault': any('envoy.extensions.filters.http.fault.v3.HTTPFault', { abort: { headerAbort: {}, percentage: { numerator: 100 } } }),
      };
      rs.find((r) => r.name === 'canary')!.route = { cluster: 'nowhere' };
    });
    await until(() => s.cp.nacks.length > 0, 10_000, 'the NACK');
    expect(s.cp.nacks[0]).toMatchObject({ typeUrl: TYPE_ROUTE });
    expect(s.cp.nacks[0]!.reason).toContain('header-controlled faults are not supported');
    expect(s.cp.nacks[0]!.reason).toContain('split');
    for (let i = 0; i < 10; i++) expect((await c.request('/split')).status).toBe(200);
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');
  }, 30_000);

  it('sends only to endpoints that prove the identity the mesh gives them (503 UF), and never to an endpoint of no known workload (503 UH)', async () => {
    const only = istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'v2', route: [{ destination: { host: 'web', subset: 'v2' } }] }] });
    const s = await stand(cleanup, [...base(), only]);
    const c = client(cleanup, s);
    expect(await c.pod('/')).toBe('web-v2');
    // The mesh now says 10.10.0.2 is another account's pod: web-v2's certificate no longer proves it.
    s.waypoint.setMesh(new MeshIndex([webSvc], [workload('web-v2', POD_IP.v2, 'payments', 'v2'), workload('client', '127.0.0.1', 'client')]));
    const before = s.v2.seen.length;
    const r = await c.request('/');
    expect(r.status).toBe(503);
    expect(s.accessLog.at(-1)).toMatchObject({ response_flags: 'UF,URX', upstream_peer_principal: 'spiffe://cluster.local/ns/conf/sa/payments' });
    expect(String(s.accessLog.at(-1)!.response_code_details)).toMatch(/^tls: /);
    // No workload at the endpoint's address: nothing to check its certificate against, so no dial.
    s.waypoint.setMesh(new MeshIndex([webSvc], [workload('client', '127.0.0.1', 'client')]));
    expect((await c.request('/')).status).toBe(503);
    expect(s.accessLog.at(-1)).toMatchObject({ response_flags: 'UH' });
    expect(s.v2.seen.length).toBe(before);
  });

  it('answers 504 UT at the route timeout and closes the upstream tunnel', async () => {
    const timed = istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'timed', timeout: '300ms', route: [{ destination: { host: 'web', subset: 'v1' } }] }] });
    const s = await stand(cleanup, [...base(), timed]);
    const c = client(cleanup, s);
    const start = Date.now();
    const r = await c.request('/slow');
    expect(r.status).toBe(504);
    expect(Date.now() - start).toBeLessThan(1500);
    expect(s.accessLog.at(-1)).toMatchObject({ response_code: 504, response_flags: 'UT', route_name: 'timed' });
    await until(() => s.v1.hbone.hbone.stats().streams === 0, 5000, 'the upstream tunnel closed');
    expect(await c.pod('/fast')).toBe('web-v1');
  });

  it('refuses a CONNECT to an address the mesh does not know', async () => {
    const s = await stand(cleanup, [...base(), routes()]);
    const c = client(cleanup, s, '10.99.99.99:80');
    await expect(c.tunnel()).rejects.toThrow(/503/);
  });
});
