// Envoy's RBAC filters at the waypoint over real parts (harness.ts: the control plane's ADS, HBONE,
// TLS): listeners carrying istiod-shaped RBAC filters (rbac-fixtures.ts) are enforced on the
// original client's identity, a denial is Envoy's 403 (or grpc-status 7) counted with the RBAC
// response flag and logged with the policy, DENY wins over ALLOW, the waypoint's own Gateway
// policies and a Service's are one ALLOW set, and path tricks cannot get past a DENY.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { spiffe } from '../hbone/harness.ts';
import {
  Cleanup, ECHO_SERVICE, HOST, NS, PROTO_HOST, PROTO_VIP, client, frontDoor, metric, protoService, publishListener, stand, subsets, until, webPod, webService, type Stand,
} from './harness.ts';
import { TYPE_LISTENER } from '../../src/control/xds/envoy/messages.ts';
import { buildListener } from '../../src/control/xds/envoy/listeners.ts';
import { andIds, andRules, httpFilter, networkFilter, port, method, orIds, orRules, pathExact, pathPrefix, policy, policyId, rbacConfig, source, type Obj } from './filters/rbac-fixtures.ts';

const objects = () => [webService(), protoService(), webPod('v1'), webPod('v2'), subsets()];
const CLIENT = spiffe(NS, 'client');
const WEB = { host: HOST, port: 80, protocol: 'http' as const };
const WEB_LISTENER = `${HOST}:80`;

async function metricReaches(s: Stand, name: string, labels: Record<string, string>, want: number): Promise<void> {
  const end = Date.now() + 5000;
  while ((await metric(s.registry, name, labels)) !== want) {
    if (Date.now() > end) throw new Error(`${name} ${JSON.stringify(labels)}: ${await metric(s.registry, name, labels)}, not ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One Istio rule: its `to` (method and path values) and `from` (principals), as istiod nests them. */
const rule = (methods: string[], paths: Obj[], principals: string[] = []): Obj =>
  policy(
    [andRules(...(methods.length ? [orRules(...methods.map(method))] : []), ...(paths.length ? [orRules(...paths)] : []), ...(!methods.length && !paths.length ? [{ any: true }] : []))],
    principals.length ? [andIds(orIds(...principals.map(source)))] : [{ any: true }],
  );

const seenUrls = (s: Stand) => [...s.v1.seen, ...s.v2.seen].map((r) => r.url);

describe('waypoint RBAC', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('ALLOW GET /api/* from one principal: that passes, the rest is Envoy\'s 403, counted and logged with the RBAC flag', async () => {
    const s = await stand(cleanup, objects());
    const allow = policyId(NS, 'get-api');
    const admins = policyId(NS, 'admins-delete');
    await publishListener(s, WEB, {
      httpFilters: [httpFilter(rbacConfig('ALLOW', { [allow]: rule(['GET'], [pathPrefix('/api/')], [CLIENT]), [admins]: rule(['DELETE'], [], [spiffe(NS, 'admin')]) }))],
    }, { listener: WEB_LISTENER, http: 1 });
    const c = client(cleanup, s);
    expect((await c.request('/api/items')).status).toBe(200);
    const post = await c.request('/api/items', { method: 'POST', body: 'x' });
    expect(post).toMatchObject({ status: 403, body: 'RBAC: access denied' });
    expect((await c.request('/api/items', { method: 'DELETE' })).status).toBe(403); // another principal's
    expect((await c.request('/other')).status).toBe(403);
    expect(seenUrls(s)).toEqual(['/api/items']);
    await metricReaches(s, 'istio_requests_total', { reporter: 'waypoint', response_code: '403', response_flags: 'RBAC' }, 3);
    await metricReaches(s, 'istio_requests_total', { reporter: 'waypoint', response_code: '200', response_flags: '-' }, 1);
    // Envoy's details say no policy matched; the log's policy field names the ALLOW policies the request failed.
    const allowPolicies = [admins, allow].map((id) => id.replace(/-rule\[\d+\]$/, '')).sort().join(',');
    expect(s.accessLog.filter((l) => l.response_flags === 'RBAC').map((l) => [l.method, l.response_code_details, l.policy])).toEqual([
      ['POST', 'rbac_access_denied_matched_policy[none]', allowPolicies],
      ['DELETE', 'rbac_access_denied_matched_policy[none]', allowPolicies],
      ['GET', 'rbac_access_denied_matched_policy[none]', allowPolicies],
    ]);
  });

  it('DENY beats ALLOW, and the log names the DENY policy', async () => {
    const s = await stand(cleanup, objects());
    const deny = policyId(NS, 'no-admin');
    await publishListener(s, WEB, {
      httpFilters: [
        httpFilter(rbacConfig('DENY', { [deny]: rule([], [pathPrefix('/api/admin')]) })),
        httpFilter(rbacConfig('ALLOW', { [policyId(NS, 'all')]: rule([], [], [CLIENT]) })),
      ],
    }, { listener: WEB_LISTENER, http: 2 });
    const c = client(cleanup, s);
    expect((await c.request('/api/admin/users')).status).toBe(403);
    expect((await c.request('/api/users')).status).toBe(200);
    expect(s.accessLog.find((l) => l.response_code === 403)).toMatchObject({ response_flags: 'RBAC', response_code_details: `rbac_access_denied_matched_policy[${deny}]` });
  });

  it('LOG (Istio\'s AUDIT) never denies; the access log tells which requests it matched', async () => {
    const s = await stand(cleanup, objects());
    await publishListener(s, WEB, { httpFilters: [httpFilter(rbacConfig('LOG', { [policyId(NS, 'audit')]: rule([], [pathPrefix('/audited')]) }))] }, { listener: WEB_LISTENER, http: 1 });
    const c = client(cleanup, s);
    expect((await c.request('/audited/x')).status).toBe(200);
    expect((await c.request('/plain')).status).toBe(200);
    await until(() => s.accessLog.length >= 2, 5000, 'two log lines');
    expect(s.accessLog.map((l) => [l.path, l.access_log_hint])).toEqual([['/audited/x', true], ['/plain', undefined]]);
  });

  it('merges the waypoint\'s own Gateway policies with a Service\'s into one ALLOW set', async () => {
    const s = await stand(cleanup, objects(), {}, { gateway: { namespace: NS, name: 'waypoint' } });
    await publishListener(s, { gateway: 'waypoint' }, { httpFilters: [httpFilter(rbacConfig('ALLOW', { [policyId(NS, 'gw')]: rule(['GET'], [pathPrefix('/gw/')]) }))] }, { listener: WEB_LISTENER, http: 1 });
    const c = client(cleanup, s);
    expect((await c.request('/gw/x')).status).toBe(200);
    expect((await c.request('/svc/x')).status).toBe(403);
    await publishListener(s, WEB, { httpFilters: [httpFilter(rbacConfig('ALLOW', { [policyId(NS, 'svc')]: rule(['GET'], [pathPrefix('/svc/')]) }))] }, { listener: WEB_LISTENER, http: 1 });
    // One ALLOW filter whose policies are both (two filters would each demand a match: nothing would pass).
    expect((await c.request('/svc/x')).status).toBe(200);
    expect((await c.request('/gw/x')).status).toBe(200);
    expect((await c.request('/neither')).status).toBe(403);
    expect(s.config.table.filters?.get(WEB_LISTENER)?.http).toHaveLength(1);
  });

  it('answers a denied gRPC call as Envoy does: trailers-only, PERMISSION_DENIED, counted as grpc', async () => {
    const s = await stand(cleanup, objects());
    await publishListener(s, { host: PROTO_HOST, port: 9090, protocol: 'grpc' }, {
      httpFilters: [httpFilter(rbacConfig('DENY', { [policyId(NS, 'no-unary')]: rule([], [pathExact('/test.Echo/Unary')]) }))],
    }, { listener: `${PROTO_HOST}:9090`, http: 1 });
    const port = await frontDoor(cleanup, s, `${PROTO_VIP}:9090`);
    const Echo = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
    const c = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Unary: (m: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void };
    cleanup.add(() => c.close());
    const err = await new Promise<grpc.ServiceError | null>((r) => c.Unary(Buffer.from('hi'), (e) => r(e)));
    expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err?.details).toBe('RBAC: access denied');
    expect([...s.v1.grpcSeen, ...s.v2.grpcSeen]).toEqual([]);
    await metricReaches(s, 'istio_requests_total', { reporter: 'waypoint', request_protocol: 'grpc', response_flags: 'RBAC', grpc_response_status: '7' }, 1);
  });

  it('normalizes paths before RBAC and routing: /./admin, //admin, /%61dmin, /x/../admin cannot get past a DENY on /admin', async () => {
    const s = await stand(cleanup, objects());
    // Istio's paths ["/admin", "/admin/*"].
    await publishListener(s, WEB, { httpFilters: [httpFilter(rbacConfig('DENY', { [policyId(NS, 'admin')]: rule([], [pathExact('/admin'), pathPrefix('/admin/')]) }))] }, { listener: WEB_LISTENER, http: 1 });
    const c = client(cleanup, s);
    for (const attack of ['/admin', '/./admin', '//admin', '/%61dmin', '/%2e/admin', '/x/../admin', '/x/%2E%2E/admin/', '///admin//users', '/admin/./', '/api/..//admin?x=/api', '/\\admin']) {
      expect([attack, (await c.request(attack)).status]).toEqual([attack, 403]);
    }
    expect(seenUrls(s)).toEqual([]);
    // What is allowed goes upstream normalized too (the endpoint sees what RBAC judged); the query is untouched.
    expect((await c.request('/api/./v1//items?next=/../admin')).status).toBe(200);
    expect(seenUrls(s)).toEqual(['/api/v1/items?next=/../admin']);
  });

  it('holds a TCP port to its network RBAC ALLOW on the original client\'s identity: the allowed one is relayed, another gets the CONNECT 401', async () => {
    const s = await stand(cleanup, objects());
    const only = (who: string) => ({ networkFilters: [networkFilter(rbacConfig('ALLOW', { [policyId(NS, 'tcp')]: policy([andRules(orRules(port(7000)))], [andIds(orIds(source(who)))]) }))] });
    await publishListener(s, { host: PROTO_HOST, port: 7000, protocol: 'tcp' }, only(CLIENT), { listener: `${PROTO_HOST}:7000`, network: 1 });
    const t = await client(cleanup, s, `${PROTO_VIP}:7000`).tunnel();
    const echoed = new Promise<string>((r) => t.once('data', (d: Buffer) => r(d.toString())));
    t.write(Buffer.from('ping'));
    expect(await echoed).toBe('ping');
    t.destroy();
    await publishListener(s, { host: PROTO_HOST, port: 7000, protocol: 'tcp' }, only(spiffe(NS, 'someone-else')), { listener: `${PROTO_HOST}:7000`, network: 1 });
    const before = s.v1.hbone.requests.length + s.v2.hbone.requests.length;
    await expect(client(cleanup, s, `${PROTO_VIP}:7000`).tunnel()).rejects.toThrow(/401/);
    expect(s.v1.hbone.requests.length + s.v2.hbone.requests.length).toBe(before);
  });

  it('holds a WebSocket handshake to the same policies as any request', async () => {
    const s = await stand(cleanup, objects());
    await publishListener(s, { host: PROTO_HOST, port: 80, protocol: 'http' }, {
      httpFilters: [httpFilter(rbacConfig('DENY', { [policyId(NS, 'no-ws')]: rule([], [pathPrefix('/ws')]) }))],
    }, { listener: `${PROTO_HOST}:80`, http: 1 });
    const t = await client(cleanup, s, `${PROTO_VIP}:80`).tunnel();
    t.write(Buffer.from('GET /./ws HTTP/1.1\r\nhost: proto\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n'));
    let got = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer: ${got}`)), 5000);
      t.on('data', (d: Buffer) => {
        got += d.toString();
        if (got.includes('RBAC: access denied')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(got).toMatch(/^HTTP\/1\.1 403 /);
    t.destroy();
    expect([...s.v1.upgrades, ...s.v2.upgrades]).toEqual([]);
    await until(() => s.accessLog.some((l) => l.response_code_details === `rbac_access_denied_matched_policy[${policyId(NS, 'no-ws')}]`), 5000, 'the log line');
  });

  it('NACKs a listener whose RBAC the waypoint cannot enforce, naming the field, and keeps enforcing the last good one', async () => {
    const s = await stand(cleanup, objects());
    await publishListener(s, WEB, { httpFilters: [httpFilter(rbacConfig('ALLOW', { p: rule(['GET'], []) }))] }, { listener: WEB_LISTENER, http: 1 });
    const c = client(cleanup, s);
    expect((await c.request('/x', { method: 'PUT' })).status).toBe(403);
    s.cp.nacks.length = 0;
    const bad = httpFilter(rbacConfig('ALLOW', { p: policy([{ any: true }], [{ filterState: { key: 'k', stringMatch: { exact: 'v' } } }]) }));
    s.cp.store.patch(TYPE_LISTENER, new Map([[WEB_LISTENER, buildListener(HOST, 80, 'http', { httpFilters: [bad], networkFilters: [] })]]), []);
    await until(() => s.cp.nacks.length > 0, 10_000, 'the NACK');
    expect(s.cp.nacks[0]!.reason).toContain('principals[0].filter_state: not supported by the waypoint');
    expect((await c.request('/x', { method: 'PUT' })).status).toBe(403);
    expect((await c.request('/x')).status).toBe(200);
  });
});
