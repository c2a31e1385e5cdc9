// Protocols through the waypoint, per service port as the Service declares them (harness.ts: the
// Service "proto"): gRPC over HTTP/2 to the endpoint with status, message and trailers kept and
// streaming both ways, on pooled sessions that survive the endpoint resetting them; an HTTP/1.1
// client to an HTTP/2 port; WebSocket upgrades relayed (other upgrades refused, a flood held back
// by backpressure, a reset passed on); a TCP port relayed as bytes with Istio's TCP series.
import * as grpc from '@grpc/grpc-js';
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup, ECHO_SERVICE, ECHO_TARGET, GRPC_TARGET, TARGET_PORT, NS, POD_IP, PROTO_HOST, PROTO_VIP, client, frontDoor, metric, protoService, publishListener, stand, subsets, until, webPod,
  webService, wsAccept, type Stand,
} from './harness.ts';
import { spiffe } from '../hbone/harness.ts';
import type { TcpRecord } from '../../src/waypoint/tcp/relay.ts';
import { andIds, andRules, networkFilter, orIds, orRules, policy, policyId, port, rbacConfig, source } from './filters/rbac-fixtures.ts';

const objects = () => [webService(), protoService(), webPod('v1'), webPod('v2'), subsets()];

const Echo = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
type EchoClient = grpc.Client & {
  Unary(m: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): grpc.ClientUnaryCall;
  Chat(): grpc.ClientDuplexStream<Buffer, Buffer>;
};

async function grpcClient(cleanup: Cleanup, s: Stand): Promise<EchoClient> {
  const port = await frontDoor(cleanup, s, `${PROTO_VIP}:9090`);
  const c = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  cleanup.add(() => c.close());
  return c;
}

const unary = (c: EchoClient, m: string) =>
  new Promise<{ value?: string; error?: grpc.ServiceError; trailers?: grpc.Metadata }>((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = c.Unary(Buffer.from(m), (error, r) => setImmediate(() => resolve({ value: r?.toString(), error: error ?? undefined, trailers })));
    call.on('status', (st: grpc.StatusObject) => (trailers = st.metadata));
  });

/** Reads from a raw tunnel until `want` matches what arrived (bounded). */
function readUntil(d: Duplex, want: (got: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => done(new Error(`timed out; got ${JSON.stringify(got.slice(0, 200))}`)), ms);
    const onData = (c: Buffer) => {
      got += c.toString('latin1');
      if (want(got)) done();
    };
    const onEnd = () => done(want(got) ? undefined : new Error(`ended; got ${JSON.stringify(got.slice(0, 200))}`));
    const done = (e?: Error) => {
      clearTimeout(timer);
      d.off('data', onData);
      d.off('end', onEnd);
      if (e) reject(e);
      else resolve(got);
    };
    d.on('data', onData);
    d.once('end', onEnd);
  });
}

const ended = (d: Duplex, ms = 5000) =>
  new Promise<void>((resolve, reject) => {
    if (d.destroyed || d.readableEnded) return resolve();
    const timer = setTimeout(() => reject(new Error('the client side did not end')), ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    d.resume();
    d.once('end', done);
    d.once('close', done);
  });

const upgradeRequest = (path: string, upgrade = 'websocket') =>
  `GET ${path} HTTP/1.1\r\nhost: proto\r\nupgrade: ${upgrade}\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n`;

async function websocket(c: ReturnType<typeof client>, path: string): Promise<{ t: Duplex; head: string }> {
  const t = await c.tunnel();
  t.write(upgradeRequest(path));
  const head = await readUntil(t, (g) => g.includes('\r\n\r\n'));
  return { t, head };
}

/** Waits (bounded) until a metric reaches `want`. */
async function metricReaches(s: Stand, name: string, labels: Record<string, string>, want: number): Promise<void> {
  const end = Date.now() + 5000;
  while ((await metric(s.registry, name, labels)) !== want) {
    if (Date.now() > end) throw new Error(`${name} ${JSON.stringify(labels)}: ${await metric(s.registry, name, labels)}, not ${want}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const idle = async (s: Stand) => {
  const held = () => {
    const st = s.waypoint.stats();
    return st.requests + st.tcp + st.tunnels;
  };
  await until(() => held() === 0, 5000, 'the waypoint to hold no request, relay or tunnel').catch((e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify(s.waypoint.stats())}`);
  });
};

describe('waypoint protocols', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('carries gRPC over HTTP/2 to the endpoint: unary results, an error status with its message, trailers, on one pooled session', async () => {
    const s = await stand(cleanup, objects());
    const c = await grpcClient(cleanup, s);
    const ok = await unary(c, 'hello');
    expect(ok.error).toBeUndefined();
    expect(ok.value).toMatch(/^web-v[12]:hello$/);
    expect(ok.trailers?.get('x-served-by')).toEqual([ok.value!.split(':')[0]]);

    const bad = await unary(c, 'fail now');
    expect(bad.error?.details).toBe('no: fail now');
    expect(bad.error?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(bad.error?.details).toBe('no: fail now');
    expect(bad.trailers?.get('x-served-by')).toHaveLength(1);

    for (let i = 0; i < 20; i++) expect((await unary(c, `n${i}`)).value).toMatch(new RegExp(`:n${i}$`));
    // 22 calls, round robin over two pods: one HBONE tunnel (one HTTP/2 session) to each, not one per call.
    const connects = [s.v1, s.v2].map((b) => b.hbone.requests.filter((r) => r.authority.port === GRPC_TARGET).length);
    expect(connects).toEqual([1, 1]);
    expect(s.waypoint.stats().upstreamH2).toBe(2);

    // grpc_response_status from the trailers, request_protocol grpc, reporter waypoint.
    const labels = { reporter: 'waypoint', request_protocol: 'grpc', destination_service_name: 'proto' };
    expect(await metric(s.registry, 'istio_requests_total', { ...labels, grpc_response_status: '0', response_code: '200' })).toBe(21);
    expect(await metric(s.registry, 'istio_requests_total', { ...labels, grpc_response_status: '7', response_code: '200' })).toBe(1);
  });

  it('streams gRPC both ways, and a session the endpoint resets is replaced for the next call', async () => {
    const s = await stand(cleanup, objects());
    const c = await grpcClient(cleanup, s);
    const chat = c.Chat();
    const got: string[] = [];
    chat.on('data', (d: Buffer) => got.push(d.toString()));
    const status = new Promise<grpc.StatusObject>((r) => chat.on('status', r));
    chat.on('error', () => {});
    for (let i = 0; i < 5; i++) {
      chat.write(Buffer.from(`m${i}`));
      await until(() => got.length === i + 1, 5000, `echo ${i}`);
    }
    chat.end();
    expect((await status).code).toBe(grpc.status.OK);
    expect(got.map((g) => g.split(':')[1])).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);

    expect((await unary(c, 'a')).value).toBeDefined();
    expect((await unary(c, 'b')).value).toBeDefined();
    // Both pods restart under the waypoint: every tunnel they relayed is reset.
    s.v1.resetAll();
    s.v2.resetAll();
    await until(() => s.waypoint.stats().upstreamH2 === 0, 5000, 'the reset sessions to leave the pool');
    for (let i = 0; i < 4; i++) expect((await unary(c, `after${i}`)).error).toBeUndefined();
    expect(s.waypoint.stats().upstreamH2).toBe(2);
  });

  it('takes an HTTP/1.1 client to an HTTP/2 port (the endpoint sees HTTP/2), and an HTTP/1.1 port stays HTTP/1.1', async () => {
    const s = await stand(cleanup, objects());
    const h2port = client(cleanup, s, `${PROTO_VIP}:8082`);
    const r = await h2port.request('/api?x=1', { method: 'POST', body: 'payload' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ url: '/api?x=1', version: '2.0' });
    const h1port = client(cleanup, s, `${PROTO_VIP}:80`);
    const r1 = await h1port.request('/plain');
    expect(JSON.parse(r1.body)).toMatchObject({ url: '/plain' });
    expect(await metric(s.registry, 'istio_requests_total', { reporter: 'waypoint', destination_service_name: 'proto', response_code: '200' })).toBe(2);
  });

  it('relays a TCP port as bytes to an endpoint, half-close included, counted in the TCP series', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:7000`);
    const t = await c.tunnel();
    const payload = Buffer.alloc(256 * 1024, 'x');
    t.write('hello ');
    t.write(payload);
    t.end();
    const got = await readUntil(t, (g) => g.length >= 6 + payload.length);
    expect(got.length).toBe(6 + payload.length);
    expect(got.startsWith('hello x')).toBe(true);
    await ended(t);
    await idle(s);
    // The endpoint's agent saw the waypoint's identity and podIP:targetPort; no HTTP was parsed.
    const connect = [...s.v1.hbone.requests, ...s.v2.hbone.requests].find((r) => r.authority.port === ECHO_TARGET)!;
    expect([POD_IP.v1, POD_IP.v2]).toContain(connect.authority.address);
    expect(await metric(s.registry, 'istio_requests_total', { destination_service_name: 'proto' })).toBe(0);
    const labels = { reporter: 'waypoint', destination_service_name: 'proto', request_protocol: 'tcp', connection_security_policy: 'mutual_tls' };
    await metricReaches(s, 'istio_tcp_connections_closed_total', labels, 1);
    expect(await metric(s.registry, 'istio_tcp_connections_opened_total', labels)).toBe(1);
    expect(await metric(s.registry, 'istio_tcp_received_bytes_total', labels)).toBe(6 + payload.length);
    expect(await metric(s.registry, 'istio_tcp_sent_bytes_total', labels)).toBe(6 + payload.length);
  });

  it('on a port of undeclared protocol, serves HTTP/1.1 and HTTP/2 as HTTP and relays anything else as TCP', async () => {
    const s = await stand(cleanup, objects());
    // HTTP/1.1 and HTTP/2 (prior knowledge) on an undeclared port are routed and counted as requests.
    const web = client(cleanup, s, `${PROTO_VIP}:8081`);
    expect(JSON.parse((await web.request('/auto')).body)).toMatchObject({ url: '/auto' });
    const h2 = await frontDoor(cleanup, s, `${PROTO_VIP}:8081`);
    const session = http2.connect(`http://127.0.0.1:${h2}`);
    cleanup.add(() => session.destroy());
    const body = await new Promise<string>((resolve, reject) => {
      const st = session.request({ ':path': '/auto2' });
      let b = '';
      st.on('data', (c: Buffer) => (b += c.toString()));
      st.once('end', () => resolve(b));
      st.once('error', reject);
    });
    expect(JSON.parse(body)).toMatchObject({ url: '/auto2' });
    await new Promise<void>((r) => session.close(() => r()));
    expect(await metric(s.registry, 'istio_requests_total', { reporter: 'waypoint', destination_service_name: 'proto', response_code: '200' })).toBe(2);
    // Bytes no request line could begin with (a binary protocol), and a text protocol that is not
    // HTTP (a lower-case verb with no version): each echoed by the TCP endpoint, byte for byte.
    const echo = client(cleanup, s, `${PROTO_VIP}:7001`);
    for (const payload of [Buffer.from([0x00, 0x01, 0x02, 0xff, 0x0d, 0x0a]), Buffer.from('PING now\r\n'), Buffer.from('GET / SPDY/3\r\n')]) {
      const t = await echo.tunnel();
      t.write(payload);
      const got = await readUntil(t, (g) => g.length >= payload.length);
      expect(Buffer.from(got, 'latin1')).toEqual(payload);
      t.end();
      await ended(t);
    }
    await idle(s);
    const labels = { reporter: 'waypoint', destination_service_name: 'proto', request_protocol: 'tcp' };
    await metricReaches(s, 'istio_tcp_connections_closed_total', labels, 3);
    expect(await metric(s.registry, 'istio_requests_total', { destination_service_name: 'proto' })).toBe(2);
  });

  it('ends the client side of a TCP relay when the endpoint resets mid-stream', async () => {
    const s = await stand(cleanup, objects());
    const t = await client(cleanup, s, `${PROTO_VIP}:7000`).tunnel();
    t.write('ping');
    await readUntil(t, (g) => g === 'ping');
    t.write('RESET');
    await ended(t);
    await idle(s);
    await metricReaches(s, 'istio_tcp_connections_closed_total', { reporter: 'waypoint', response_flags: 'UR' }, 1);
    // The endpoint's whole HBONE session goes (its agent restarts): the relay on it ends too.
    const t2 = await client(cleanup, s, `${PROTO_VIP}:7000`).tunnel();
    t2.write('ping');
    await readUntil(t2, (g) => g === 'ping');
    void s.v1.hbone.hbone.drain(0);
    void s.v2.hbone.hbone.drain(0);
    await ended(t2);
    await idle(s);
    await metricReaches(s, 'istio_tcp_connections_closed_total', { reporter: 'waypoint', response_flags: 'UR' }, 2);
  });

  it('relays a WebSocket upgrade: the 101 passed back and bytes echoed both ways until the client closes', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const { t, head } = await websocket(c, '/ws');
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head.toLowerCase()).toContain(`sec-websocket-accept: ${wsAccept('dGhlIHNhbXBsZSBub25jZQ==').toLowerCase()}`);
    for (const m of ['one', 'two', 'x'.repeat(100_000)]) {
      t.write(m);
      expect((await readUntil(t, (g) => g.length >= m.length)).length).toBe(m.length);
    }
    t.end();
    await ended(t);
    await idle(s);
    expect([...s.v1.upgrades, ...s.v2.upgrades]).toEqual(['websocket /ws']);
    expect(await metric(s.registry, 'istio_requests_total', { reporter: 'waypoint', response_code: '101' })).toBe(1);
  });

  it('refuses an upgrade to anything but websocket (403) and serves an h2c upgrade request as plain HTTP/1.1', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const t = await c.tunnel();
    t.write(upgradeRequest('/x', 'evil-proto'));
    expect(await readUntil(t, (g) => g.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 403 /);
    await ended(t);
    // A handshake with a body: its bytes would reach the endpoint after the 101, so it is refused.
    const smuggle = await c.tunnel();
    smuggle.write(upgradeRequest('/ws').replace('\r\n\r\n', '\r\ncontent-length: 18\r\n\r\n') + 'GET /x HTTP/1.1\r\n\r\n');
    expect(await readUntil(smuggle, (g) => g.includes('\r\n\r\n'))).toMatch(/^HTTP\/1\.1 403 /);
    await ended(smuggle);
    const h2c = await c.tunnel();
    h2c.write('GET /h2c HTTP/1.1\r\nhost: proto\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n');
    const reply = await readUntil(h2c, (g) => g.includes('"url":"/h2c"'));
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    await ended(h2c);
    expect([...s.v1.upgrades, ...s.v2.upgrades]).toEqual([]);
    // The backend saw a plain request, without the upgrade.
    const seen = [...s.v1.seen, ...s.v2.seen].find((r) => r.url === '/h2c')!;
    expect(seen.headers.upgrade).toBeUndefined();
    expect(seen.headers['http2-settings']).toBeUndefined();
    await idle(s);
  });

  it('holds a flooding WebSocket client back by backpressure when the endpoint does not read', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const { t, head } = await websocket(c, '/ws-stall');
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    // A client writing 64 MiB as fast as the path takes it: each chunk once the one before has gone
    // out. With backpressure the waypoint stops taking at the windows and socket buffers in between
    // (a write then stalls); a waypoint that read regardless would take it all into its memory.
    const chunk = Buffer.alloc(256 * 1024, 'f');
    let taken = 0;
    for (let i = 0; i < 256; i++) {
      const went = await Promise.race([new Promise<boolean>((r) => t.write(chunk, () => r(true))), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))]);
      if (!went) break;
      taken += chunk.length;
    }
    expect(taken).toBeGreaterThan(0);
    expect(taken).toBeLessThan(32 * 1024 * 1024);
    // The client goes away (a reset: a plain destroy would wait for its unsent writes to finish).
    t.destroy(new Error('client gone'));
    await idle(s);
  });

  it('ends the client side of a WebSocket when the endpoint resets it', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const { t, head } = await websocket(c, '/ws-reset');
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    await ended(t);
    await idle(s);
    expect((t as unknown as Socket).destroyed || t.readableEnded).toBe(true);
  });

  it('keeps at most maxSessions HTTP/2 sessions, closing the oldest to make room', async () => {
    const s = await stand(cleanup, objects(), { h2Limits: { maxSessions: 1 } });
    const c = await grpcClient(cleanup, s);
    for (let i = 0; i < 6; i++) {
      expect((await unary(c, `b${i}`)).error).toBeUndefined();
      expect(s.waypoint.stats().upstreamH2).toBeLessThanOrEqual(1);
    }
    // Round robin over two pods with room for one session: each call opened its own.
    const connects = [s.v1, s.v2].map((b) => b.hbone.requests.filter((r) => r.authority.port === GRPC_TARGET).length);
    expect(connects[0]! + connects[1]!).toBe(6);
  });

  it('ends a gRPC stream in flight when its endpoint resets (the client sees the failure, not a hang)', async () => {
    const s = await stand(cleanup, objects());
    const c = await grpcClient(cleanup, s);
    const chat = c.Chat();
    const got: string[] = [];
    chat.on('data', (d: Buffer) => got.push(d.toString()));
    chat.on('error', () => {});
    const status = new Promise<grpc.StatusObject>((r) => chat.on('status', r));
    chat.write(Buffer.from('first'));
    await until(() => got.length === 1, 5000, 'the first echo');
    s.v1.resetAll();
    s.v2.resetAll();
    const st = await Promise.race([status, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]);
    expect(st?.code).toBeDefined();
    expect(st!.code).not.toBe(grpc.status.OK);
    await metricReaches(s, 'istio_requests_total', { reporter: 'waypoint', request_protocol: 'grpc', response_flags: 'UR' }, 1);
  });

  it('refuses a connection to a TCP port that its network RBAC filter denies, before dialling anything', async () => {
    const records: TcpRecord[] = [];
    const s = await stand(cleanup, objects(), { onTcp: (r) => records.push(r) });
    const deny = policyId(NS, 'deny-client');
    await publishListener(s, { host: PROTO_HOST, port: 7000, protocol: 'tcp' }, {
      networkFilters: [networkFilter(rbacConfig('DENY', { [deny]: policy([andRules(orRules(port(7000)))], [andIds(orIds(source(spiffe(NS, 'client'))))]) }))],
    }, { listener: `${PROTO_HOST}:7000`, network: 1 });
    const c = client(cleanup, s, `${PROTO_VIP}:7000`);
    await expect(c.tunnel()).rejects.toThrow(/401/);
    expect([...s.v1.hbone.requests, ...s.v2.hbone.requests]).toEqual([]);
    await metricReaches(s, 'istio_tcp_connections_closed_total', { reporter: 'waypoint', response_flags: 'RBAC' }, 1);
    expect(records).toMatchObject([{ flags: 'RBAC', details: `denied by ${deny}: rbac_access_denied_matched_policy[${deny}]` }]);
    // Another port of the service, without the filter, is not refused.
    const other = client(cleanup, s, `${PROTO_VIP}:7001`);
    (await other.tunnel()).destroy();
  });

  it('keeps HTTP/1.1 tunnels for reuse when asked: bounded per endpoint, and replaced after the endpoint resets them', async () => {
    const s = await stand(cleanup, objects(), { h1KeepAlive: { maxIdlePerEndpoint: 1 } });
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const connects = () => [s.v1, s.v2].reduce((n, b) => n + b.hbone.requests.filter((r) => r.authority.port === TARGET_PORT).length, 0);
    for (let i = 0; i < 10; i++) expect((await c.request(`/seq${i}`)).status).toBe(200);
    expect(connects()).toBe(2); // one tunnel per pod, reused by the ten requests
    expect(s.waypoint.stats().upstreamH1Idle).toBe(2);
    // Six at once need six tunnels; afterwards one per pod is kept, the rest closed.
    const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => c.request(`/par${i}`, { method: 'POST', body: 'x'.repeat(1000) })));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    await until(() => s.waypoint.stats().upstreamH1Idle <= 2 && s.v1.hbone.hbone.stats().streams + s.v2.hbone.hbone.stats().streams <= 2, 5000, 'the pool back within its bound');
    // The pods restart under the waypoint: the idle tunnels go, and the next requests open new ones.
    s.v1.resetAll();
    s.v2.resetAll();
    await until(() => s.waypoint.stats().upstreamH1Idle === 0, 5000, 'the reset tunnels to leave the pool');
    for (let i = 0; i < 4; i++) expect((await c.request(`/after${i}`)).status).toBe(200);
    expect([...s.v1.seen, ...s.v2.seen].filter((r) => r.url.startsWith('/after'))).toHaveLength(4);
  }, 30_000);

  it('passes trailers both ways on an HTTP/2 port: an HTTP/2 client\'s request trailers, the endpoint\'s response trailers to HTTP/2 and HTTP/1.1 clients', async () => {
    const s = await stand(cleanup, objects());
    const port = await frontDoor(cleanup, s, `${PROTO_VIP}:8082`);
    const session = http2.connect(`http://127.0.0.1:${port}`);
    cleanup.add(() => session.destroy());
    const stream = session.request({ ':method': 'POST', ':path': '/t', ':authority': 'proto' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    stream.end('body');
    const trailers = new Promise<http2.IncomingHttpHeaders>((r) => stream.once('trailers', r));
    let body = '';
    stream.on('data', (c: Buffer) => (body += c.toString()));
    await new Promise<void>((r) => stream.once('end', r));
    expect(JSON.parse(body)).toMatchObject({ url: '/t', version: '2.0', trailers: { 'x-checksum': 'abc' } });
    expect((await trailers)['x-pod']).toMatch(/^web-v[12]$/);

    // An HTTP/1.1 client gets the endpoint's trailers after the last chunk.
    const t = await client(cleanup, s, `${PROTO_VIP}:8082`).tunnel();
    const h1Trailers = await new Promise<Record<string, string | undefined>>((resolve, reject) => {
      const req = http.request({ createConnection: () => t as unknown as Socket, path: '/h1', headers: { host: 'proto' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.trailers));
      });
      req.on('error', reject);
      req.end();
    });
    expect(h1Trailers['x-pod']).toMatch(/^web-v[12]$/);
  });
});
