// Istio's CUSTOM action at the waypoint over real parts (harness.ts): the listener carries the
// ext_authz filter as istiod builds it from mesh config's envoyExtAuthzGrpc / envoyExtAuthzHttp,
// and a real authorizer decides: a grpc-js envoy.service.auth.v3.Authorization server (Envoy's
// protos) in the mesh (reached over HBONE) or outside it (plaintext HTTP/2), and an HTTP authorizer.
// It allows or denies by the request's x-authz header and edits headers; unreachable, slow or
// hostile authorizers fail closed (403 UAEX) unless failOpen.
import http from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { authorizationService } from '../../src/api/envoy-auth.ts';
import { any, duration, TYPE_LISTENER } from '../../src/control/xds/envoy/messages.ts';
import { buildListener } from '../../src/control/xds/envoy/listeners.ts';
import { MeshIndex } from '../../src/waypoint/mesh.ts';
import { connectTo, spiffe, startHbone } from '../hbone/harness.ts';
import {
  Cleanup, ECHO_SERVICE, HOST, NS, POD_IP, PROTO_HOST, PROTO_VIP, client, frontDoor, metric, protoService, protoSvc, stand, until,
  webPod, webService, webSvc, workload, type Stand,
} from './harness.ts';

const EXT_AUTHZ = 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const AUTHZ_IP = '10.10.0.9';
/** Outside the mesh (no workload there): reached in plaintext. 127.0.0.1 is the client's workload. */
const PLAIN_IP = '127.0.0.2';
const GRPC_PORT = 9000;
const HTTP_PORT = 8000;
const cluster = (svc: string, port: number) => `outbound|${port}||${svc}.${NS}.svc.cluster.local`;

type Check = { attributes: { source: Record<string, unknown>; destination: Record<string, unknown>; request: { http: Record<string, unknown> & { headers: Record<string, string> } } } };

/** The gRPC authorizer: by x-authz, allow (with header edits), deny (401 with headers and body), fail, hang, or answer too much. */
async function grpcAuthorizer(cleanup: Cleanup, host: string) {
  const checks: Check[] = [];
  const cancelled: string[] = [];
  const server = new grpc.Server();
  // A Buffer answer goes out as it is (a malformed CheckResponse).
  const service = authorizationService();
  const serialize = service.Check!.responseSerialize;
  service.Check!.responseSerialize = (o: unknown) => (Buffer.isBuffer(o) ? o : serialize(o));
  server.addService(service, {
    Check: (call: grpc.ServerUnaryCall<Check, object>, cb: grpc.sendUnaryData<object>) => {
      const req = call.request;
      checks.push(req);
      const h = req.attributes.request.http.headers;
      call.on('cancelled', () => cancelled.push(h['x-authz'] ?? ''));
      switch (h['x-authz']) {
        case 'allow':
          return cb(null, {
            status: { code: 0 },
            okResponse: {
              headers: [{ header: { key: 'x-authz-user', value: 'alice' } }, { header: { key: 'x-tag', value: 'b' }, append: { value: true } }],
              headersToRemove: ['x-remove-me'],
              responseHeadersToAdd: [{ header: { key: 'x-authz-said', value: 'ok' } }],
            },
          });
        case 'deny':
          return cb(null, { status: { code: 7 }, deniedResponse: { status: { code: 401 }, headers: [{ header: { key: 'x-denied-by', value: 'authz' } }], body: 'denied by authz' } });
        case 'deny-plain':
          return cb(null, { status: { code: 7 } });
        case 'fail':
          return cb({ code: grpc.status.UNAVAILABLE, details: 'authorizer broken' });
        case 'huge':
          return cb(null, { status: { code: 7 }, deniedResponse: { body: 'x'.repeat(1 << 20) } });
        case 'many-headers':
          return cb(null, { status: { code: 0 }, okResponse: { headers: Array.from({ length: 500 }, (_, i) => ({ header: { key: `x-h${i}`, value: 'v' } })) } });
        case 'bad-header':
          return cb(null, { status: { code: 0 }, okResponse: { headers: [{ header: { key: 'x-evil', value: 'a\r\nx-injected: 1' } }] } });
        case 'garbage':
          return cb(null, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]) as unknown as object);
        case 'hang':
          return; // never answers
        default:
          return cb(null, { status: { code: 7 } });
      }
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  cleanup.add(() => server.forceShutdown());
  return { port, checks, cancelled };
}

/** Envoy's HTTP authorization semantics' other side: 200 allows with x-authz-user, other statuses deny. */
async function httpAuthorizer(cleanup: Cleanup, host: string) {
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const v = req.headers['x-authz'];
    if (v === 'allow') return void res.writeHead(200, { 'x-authz-user': 'bob', 'x-secret': 'no', 'x-authz-said': 'ok', 'x-envoy-auth-headers-to-remove': 'x-drop-me' }).end();
    if (v === 'error') return void res.writeHead(503).end('down');
    res.writeHead(403, { 'content-type': 'application/json', 'x-denied-by': 'http-authz', 'x-internal': 'hidden' }).end('{"denied":true}');
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  cleanup.add(() => void server.close());
  return { port: (server.address() as AddressInfo).port, seen };
}

const authzService = (name: string, ports: { name: string; port: number; targetPort: number }[]): KObject => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, ports },
});
const authzPod = (name: string, ip: string): KObject => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: name } },
  spec: { serviceAccountName: name, containers: [{ name: 'app' }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});

/** istiod's ext_authz for envoyExtAuthzGrpc (generateGRPCConfig's shape). */
const grpcFilter = (c: string, o: { timeoutMs?: number; failOpen?: boolean; statusOnError?: number; extra?: object } = {}) => ({
  name: 'envoy.filters.http.ext_authz',
  typedConfig: any(EXT_AUTHZ, {
    grpcService: { envoyGrpc: { clusterName: c, authority: c.replaceAll('|', '_.') }, timeout: duration(o.timeoutMs ?? 2000) },
    transportApiVersion: 'V3',
    ...(o.failOpen && { failureModeAllow: true }),
    ...(o.statusOnError && { statusOnError: { code: o.statusOnError } }),
    ...o.extra,
  }),
});

/** istiod's ext_authz for envoyExtAuthzHttp (generateHTTPConfig's shape): headers lists are ignore-case exact matchers. */
const exact = (names: string[]) => ({ patterns: names.map((n) => ({ exact: n, ignoreCase: true })) });
const httpFilter = (c: string, host: string) => ({
  name: 'envoy.filters.http.ext_authz',
  typedConfig: any(EXT_AUTHZ, {
    httpService: {
      pathPrefix: '/check',
      serverUri: { uri: `http://${host}`, cluster: c, timeout: duration(2000) },
      authorizationRequest: { allowedHeaders: exact(['x-authz']), headersToAdd: [{ key: 'x-from', value: 'waypoint' }] },
      authorizationResponse: { allowedUpstreamHeaders: exact(['x-authz-user']), allowedClientHeaders: exact(['x-denied-by', 'content-type']), allowedClientHeadersOnSuccess: exact(['x-authz-said']) },
    },
    transportApiVersion: 'V3',
  }),
});

interface Lab {
  s: Stand;
  grpcMesh: Awaited<ReturnType<typeof grpcAuthorizer>>;
  grpcPlain: Awaited<ReturnType<typeof grpcAuthorizer>>;
  httpPlain: Awaited<ReturnType<typeof httpAuthorizer>>;
  /** A port on PLAIN_IP where nothing listens (the authorizer down). */
  downPort: number;
  /** Serves web:80's (or another port's) Listener with these HTTP filters, and waits until the waypoint has it. */
  filters(f: object[], host?: string, port?: number, protocol?: 'http' | 'grpc'): Promise<void>;
}

async function lab(cleanup: Cleanup): Promise<Lab> {
  const grpcMesh = await grpcAuthorizer(cleanup, '127.0.0.1');
  const grpcPlain = await grpcAuthorizer(cleanup, PLAIN_IP);
  const httpPlain = await httpAuthorizer(cleanup, PLAIN_IP);
  const down = http.createServer();
  await new Promise<void>((r) => down.listen(0, PLAIN_IP, r));
  const downPort = (down.address() as AddressInfo).port;
  await new Promise((r) => down.close(r));

  // The authorizer pod in the mesh: its agent's HBONE server relays podIP:9000 to the gRPC server.
  const objects = [
    webService(), webPod('v1'), webPod('v2'), protoService(),
    authzService('ext-authz', [{ name: 'grpc', port: GRPC_PORT, targetPort: GRPC_PORT }, { name: 'grpc-stuck', port: 9002, targetPort: 9002 }]), authzPod('ext-authz', AUTHZ_IP),
    authzService('plain-authz', [{ name: 'grpc', port: GRPC_PORT, targetPort: grpcPlain.port }, { name: 'http', port: HTTP_PORT, targetPort: httpPlain.port }, { name: 'grpc-down', port: 9001, targetPort: downPort }]),
    authzPod('plain-authz', PLAIN_IP),
  ];
  const hbonePorts: Record<string, number> = {};
  const mesh = new MeshIndex([webSvc, protoSvc], [
    workload('web-v1', POD_IP.v1, 'web-v1', 'v1'), workload('web-v2', POD_IP.v2, 'web-v2', 'v2'), workload('client', '127.0.0.1', 'client'), workload('ext-authz', AUTHZ_IP, 'ext-authz'),
  ]);
  const s = await stand(cleanup, objects, { mesh, dial: async (address) => (await connectTo(hbonePorts[address] ?? 1)).setNoDelay(true) });
  hbonePorts[POD_IP.v1] = s.v1.hbone.port;
  hbonePorts[POD_IP.v2] = s.v2.hbone.port;
  const creds = await s.ca.issue(NS, 'ext-authz');
  const agent = await startHbone(() => creds);
  // Port 9002: the agent never answers the CONNECT (an authorizer that cannot even be reached in time).
  agent.decide = async (req) => {
    if (req.authority.port === 9002) return new Promise(() => {});
    return req.authority.port === GRPC_PORT ? { status: 200, upstream: await connectTo(grpcMesh.port) } : { status: 503, reason: 'nothing there' };
  };
  cleanup.add(() => agent.hbone.drain(100));
  hbonePorts[AUTHZ_IP] = agent.port;
  await until(() => ['ext-authz', 'plain-authz'].every((n) => s.config.table.clusters.has(cluster(n, GRPC_PORT))) && [...s.config.table.endpoints.keys()].some((k) => k.includes('plain-authz')), 10_000, 'authorizer clusters');

  const filters = async (f: object[], host = HOST, port = 80, protocol: 'http' | 'grpc' = 'http') => {
    const name = `${host}:${port}`;
    const before = s.config.table.filters?.get(name);
    s.cp.store.patch(TYPE_LISTENER, new Map([[name, buildListener(host, port, protocol, { httpFilters: f as never[], networkFilters: [] })]]), []);
    await until(() => s.config.table.filters?.get(name) !== before, 10_000, `${name} filters`);
  };
  return { s, grpcMesh, grpcPlain, httpPlain, downPort, filters };
}

describe('waypoint ext_authz (CUSTOM)', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('asks a gRPC authorizer in the mesh (over HBONE) and one outside it (plaintext): allow with header edits, deny with its status, headers and body', async () => {
    const l = await lab(cleanup);
    const c = client(cleanup, l.s);
    for (const [name, authz] of [['ext-authz', l.grpcMesh], ['plain-authz', l.grpcPlain]] as const) {
      await l.filters([grpcFilter(cluster(name, GRPC_PORT))]);
      const before = l.s.v1.seen.length + l.s.v2.seen.length;
      const ok = await c.request('/allowed?q=1', { headers: { 'x-authz': 'allow', 'x-tag': 'a', 'x-remove-me': 'secret' } });
      expect(ok.status).toBe(200);
      expect(ok.headers['x-authz-said']).toBe('ok');
      const seen = [...l.s.v1.seen, ...l.s.v2.seen].find((x) => x.url === '/allowed?q=1')!;
      expect(seen.headers['x-authz-user']).toBe('alice');
      expect(seen.headers['x-tag']).toBe('a,b');
      expect(seen.headers['x-remove-me']).toBeUndefined();
      // What the authorizer was told, as Envoy fills a CheckRequest.
      const check = authz.checks.at(-1)!;
      expect(check.attributes.source.principal).toBe(spiffe(NS, 'client'));
      expect(check.attributes.destination.principal).toBe(l.s.waypointId);
      expect((check.attributes.source.address as { socketAddress: { address: string } }).socketAddress.address).toBe('127.0.0.1');
      expect(check.attributes.request.http).toMatchObject({ method: 'GET', path: '/allowed?q=1', host: 'web', scheme: 'http', protocol: 'HTTP/1.1' });
      expect(check.attributes.request.http.headers).toMatchObject({ ':authority': 'web', ':method': 'GET', ':path': '/allowed?q=1', 'x-authz': 'allow' });

      const denied = await c.request('/denied', { headers: { 'x-authz': 'deny' } });
      expect(denied.status).toBe(401);
      expect(denied.body).toBe('denied by authz');
      expect(denied.headers['x-denied-by']).toBe('authz');
      // A denial without a denied_response: Envoy's 403.
      expect((await c.request('/denied', { headers: { 'x-authz': 'deny-plain' } })).status).toBe(403);
      expect(l.s.v1.seen.length + l.s.v2.seen.length).toBe(before + 1);
    }
    // The mesh authorizer was reached over HBONE with its identity expected.
    expect(l.grpcMesh.checks.length).toBe(3);
    // Denials are counted as Istio counts them, with UAEX and the authorizer's status.
    expect(await metric(l.s.registry, 'istio_requests_total', { response_code: '401', response_flags: 'UAEX' })).toBe(2);
    expect(await metric(l.s.registry, 'istio_requests_total', { response_code: '403', response_flags: 'UAEX' })).toBe(2);
    expect(l.s.accessLog.some((e) => e.response_flags === 'UAEX' && e.response_code_details === 'ext_authz_denied')).toBe(true);
  });

  it('fails closed when the authorizer is down or broken (status_on_error, 403 by default, UAEX), open with failure_mode_allow', async () => {
    const l = await lab(cleanup);
    const c = client(cleanup, l.s);
    await l.filters([grpcFilter(cluster('plain-authz', 9001))]);
    const down = await c.request('/', { headers: { 'x-authz': 'allow' } });
    expect(down.status).toBe(403);
    expect(await metric(l.s.registry, 'istio_requests_total', { response_code: '403', response_flags: 'UAEX' })).toBe(1);
    expect(l.s.accessLog.at(-1)).toMatchObject({ response_code_details: 'ext_authz_error' });

    await l.filters([grpcFilter(cluster('plain-authz', 9001), { statusOnError: 503 })]);
    expect((await c.request('/', { headers: { 'x-authz': 'allow' } })).status).toBe(503);

    await l.filters([grpcFilter(cluster('plain-authz', 9001), { failOpen: true, extra: { failureModeAllowHeaderAdd: true } })]);
    const open = await c.request('/open');
    expect(open.status).toBe(200);
    expect([...l.s.v1.seen, ...l.s.v2.seen].find((x) => x.url === '/open')!.headers['x-envoy-auth-failure-mode-allowed']).toBe('true');

    // An authorizer answering with a gRPC error, too much, too many headers or a header that would inject: errors, closed.
    await l.filters([grpcFilter(cluster('ext-authz', GRPC_PORT))]);
    for (const v of ['fail', 'huge', 'many-headers', 'bad-header', 'garbage']) {
      const r = await c.request('/', { headers: { 'x-authz': v } });
      expect(r.status, v).toBe(403);
      expect(r.headers['x-injected'], v).toBeUndefined();
      expect(l.s.accessLog.at(-1), v).toMatchObject({ response_flags: 'UAEX', response_code_details: 'ext_authz_error' });
    }
    // An unknown cluster is an error too, never an allow.
    await l.filters([grpcFilter('outbound|1||nowhere.svc.cluster.local')]);
    expect((await c.request('/', { headers: { 'x-authz': 'allow' } })).status).toBe(403);
  });

  it('bounds the call by the timeout, and cancels it when the client goes away', async () => {
    const l = await lab(cleanup);
    const c = client(cleanup, l.s);
    await l.filters([grpcFilter(cluster('ext-authz', GRPC_PORT), { timeoutMs: 300 })]);
    const r = await c.request('/', { headers: { 'x-authz': 'hang' } });
    expect(r.status).toBe(403);
    expect(l.s.accessLog.at(-1)).toMatchObject({ response_flags: 'UAEX', response_code_details: 'ext_authz_error' });
    await until(() => l.grpcMesh.cancelled.includes('hang'), 5000, 'the timed-out check cancelled at the authorizer');

    // A flood of checks the authorizer never answers: each ends at the timeout, cancelled at the authorizer.
    const cancelled = l.grpcMesh.cancelled.length;
    const flood = await Promise.all(Array.from({ length: 40 }, () => c.request('/', { headers: { 'x-authz': 'hang' } })));
    expect(flood.every((x) => x.status === 403)).toBe(true);
    await until(() => l.grpcMesh.cancelled.length >= cancelled + 40, 5000, 'every flooded check cancelled');

    // The timeout covers reaching the authorizer: a CONNECT never answered ends in time too.
    await l.filters([grpcFilter(cluster('ext-authz', 9002), { timeoutMs: 300 })]);
    expect((await c.request('/', { headers: { 'x-authz': 'allow' } })).status).toBe(403);
    expect(l.s.accessLog.at(-1)).toMatchObject({ response_flags: 'UAEX', response_code_details: 'ext_authz_error' });

    // failure_mode_allow lets a timed-out check through.
    await l.filters([grpcFilter(cluster('ext-authz', GRPC_PORT), { timeoutMs: 300, failOpen: true })]);
    expect((await c.request('/', { headers: { 'x-authz': 'hang' } })).status).toBe(200);

    // A client that leaves while its check hangs: the check is cancelled long before the timeout.
    await l.filters([grpcFilter(cluster('ext-authz', GRPC_PORT), { timeoutMs: 60_000 })]);
    const cancelledBefore = l.grpcMesh.cancelled.length;
    const checksBefore = l.grpcMesh.checks.length;
    const t = await c.tunnel();
    t.write('GET /gone HTTP/1.1\r\nhost: web\r\nx-authz: hang\r\n\r\n');
    await until(() => l.grpcMesh.checks.length > checksBefore, 5000, 'the check started');
    t.destroy();
    await until(() => l.grpcMesh.cancelled.length > cancelledBefore, 5000, 'the check cancelled');
    await until(() => l.s.waypoint.stats().requests === 0, 5000, 'no request left');
  });

  it('speaks Envoy HTTP authorization to an HTTP authorizer: allowed headers, path prefix, upstream and client headers', async () => {
    const l = await lab(cleanup);
    const c = client(cleanup, l.s);
    await l.filters([httpFilter(cluster('plain-authz', HTTP_PORT), `plain-authz.${NS}.svc.cluster.local`)]);
    const ok = await c.request('/data?x=1', { method: 'POST', body: 'payload', headers: { 'x-authz': 'allow', authorization: 'Bearer t', cookie: 'private', 'x-drop-me': 'gone' } });
    expect(ok.status).toBe(200);
    expect(ok.headers['x-authz-said']).toBe('ok');
    const asked = l.httpPlain.seen.at(-1)!;
    expect(asked).toMatchObject({ method: 'POST', url: '/check/data?x=1' });
    expect(asked.headers).toMatchObject({ host: 'web', authorization: 'Bearer t', 'x-authz': 'allow', 'x-from': 'waypoint', 'content-length': '0' });
    expect(asked.headers.cookie).toBeUndefined();
    const up = [...l.s.v1.seen, ...l.s.v2.seen].find((x) => x.url === '/data?x=1')!;
    expect(up.headers['x-authz-user']).toBe('bob');
    expect(up.headers['x-secret']).toBeUndefined();
    expect(up.headers['x-drop-me']).toBeUndefined();
    expect(up.body).toBe(7);

    const denied = await c.request('/data', { headers: { 'x-authz': 'no' } });
    expect(denied.status).toBe(403);
    expect(denied.body).toBe('{"denied":true}');
    expect(denied.headers['content-type']).toBe('application/json');
    expect(denied.headers['x-denied-by']).toBe('http-authz');
    expect(denied.headers['x-internal']).toBeUndefined();
    // The authorizer's 5xx is an error: status_on_error.
    expect((await c.request('/data', { headers: { 'x-authz': 'error' } })).status).toBe(403);
    expect(await metric(l.s.registry, 'istio_requests_total', { response_code: '403', response_flags: 'UAEX' })).toBe(2);
  });

  it('answers a denied gRPC client as Envoy does: trailers-only with the mapped grpc-status, counted with UAEX', async () => {
    const l = await lab(cleanup);
    // With the body (raw bytes) in the check: an HTTP/2 request's body read ahead and still sent whole.
    await l.filters([grpcFilter(cluster('ext-authz', GRPC_PORT), { extra: { withRequestBody: { maxRequestBytes: 4096, packAsBytes: true } } })], PROTO_HOST, 9090, 'grpc');
    const port = await frontDoor(cleanup, l.s, `${PROTO_VIP}:9090`);
    const Echo = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
    const echo = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Unary(m: Buffer, md: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): void;
    };
    cleanup.add(() => echo.close());
    const call = (v: string) =>
      new Promise<{ error?: grpc.ServiceError; value?: string }>((resolve) => {
        const md = new grpc.Metadata();
        md.set('x-authz', v);
        echo.Unary(Buffer.from('hi'), md, (error, r) => resolve({ error: error ?? undefined, value: r?.toString() }));
      });
    expect((await call('allow')).value).toMatch(/^web-v[12]:hi$/);
    const rawBody = l.grpcMesh.checks.at(-1)!.attributes.request.http.rawBody as Buffer;
    expect(rawBody.subarray(5).toString()).toBe('hi'); // the gRPC frame: flag, length, message
    expect(l.grpcMesh.checks.at(-1)!.attributes.request.http).toMatchObject({ protocol: 'HTTP/2', method: 'POST', path: '/test.Echo/Unary' });
    const denied = await call('deny');
    expect(denied.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(denied.error?.details).toBe('denied by authz');
    expect((await call('fail')).error?.code).toBe(grpc.status.PERMISSION_DENIED);
    const labels = { request_protocol: 'grpc', response_code: '200', response_flags: 'UAEX' };
    expect(await metric(l.s.registry, 'istio_requests_total', { ...labels, grpc_response_status: '16' })).toBe(1);
    expect(await metric(l.s.registry, 'istio_requests_total', { ...labels, grpc_response_status: '7' })).toBe(1);
  });

  it('sends the body with the check (with_request_body): whole, refused past the limit (413), or a part when allowed; the upstream gets all of it', async () => {
    const l = await lab(cleanup);
    const c = client(cleanup, l.s);
    const withBody = (allowPartialMessage: boolean) => grpcFilter(cluster('ext-authz', GRPC_PORT), { extra: { withRequestBody: { maxRequestBytes: 1024, allowPartialMessage } } });
    await l.filters([withBody(false)]);
    const ok = await c.request('/small', { method: 'POST', body: 'payload', headers: { 'x-authz': 'allow' } });
    expect(ok.status).toBe(200);
    expect(l.grpcMesh.checks.at(-1)!.attributes.request.http).toMatchObject({ body: 'payload', size: 7 });
    expect(l.grpcMesh.checks.at(-1)!.attributes.request.http.headers['x-envoy-auth-partial-body']).toBe('false');
    expect([...l.s.v1.seen, ...l.s.v2.seen].find((x) => x.url === '/small')!.body).toBe(7);

    const big = Buffer.alloc(100_000, 'a');
    const checks = l.grpcMesh.checks.length;
    const refused = await c.request('/big', { method: 'POST', body: big, headers: { 'x-authz': 'allow' } });
    expect(refused.status).toBe(413);
    expect(l.grpcMesh.checks.length).toBe(checks);
    expect([...l.s.v1.seen, ...l.s.v2.seen].some((x) => x.url === '/big')).toBe(false);

    await l.filters([withBody(true)]);
    expect((await c.request('/big', { method: 'POST', body: big, headers: { 'x-authz': 'allow' } })).status).toBe(200);
    const http = l.grpcMesh.checks.at(-1)!.attributes.request.http;
    expect(String(http.body).length).toBe(1024);
    expect(http.headers['x-envoy-auth-partial-body']).toBe('true');
    expect([...l.s.v1.seen, ...l.s.v2.seen].find((x) => x.url === '/big')!.body).toBe(100_000);
  });

  it('refuses (NACKs) an ext_authz config with fields it does not enforce, naming them', async () => {
    const l = await lab(cleanup);
    const name = `${HOST}:80`;
    l.s.cp.store.patch(TYPE_LISTENER, new Map([[name, buildListener(HOST, 80, 'http', { httpFilters: [grpcFilter(cluster('ext-authz', GRPC_PORT), { extra: { includePeerCertificate: true } })], networkFilters: [] })]]), []);
    await until(() => l.s.cp.nacks.some((n) => n.reason.includes('include_peer_certificate: not supported')), 10_000, 'a NACK naming include_peer_certificate');
  });
});
