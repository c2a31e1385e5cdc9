// Retries to HTTP/2 upstreams (gRPC and http2 ports) through the waypoint, with Envoy's behaviour
// as the reference: a gRPC status read from a trailers-only response (retryOn unavailable, and the
// control plane's default policy), a refused stream (RST_STREAM REFUSED_STREAM, a stream past a
// GOAWAY), 5xx with the body replayed, per-try timeouts; never a response that began (a gRPC
// stream failing after its first message, a reset mid-response), never a body past the replay
// bound; and a long stream keeps no replay bytes once its response began.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup, ECHO_SERVICE, PROTO_VIP, client, frontDoor, istio, protoService, seeded, stand, subsets, until, webPod, webService, type Stand,
} from './harness.ts';

const Echo = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
type EchoClient = grpc.Client & {
  Unary(m: Buffer, md: grpc.Metadata, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): grpc.ClientUnaryCall;
  Chat(): grpc.ClientDuplexStream<Buffer, Buffer>;
  Feed(m: Buffer): grpc.ClientReadableStream<Buffer>;
};

async function grpcClient(cleanup: Cleanup, s: Stand): Promise<EchoClient> {
  const port = await frontDoor(cleanup, s, `${PROTO_VIP}:9090`);
  const c = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  cleanup.add(() => c.close());
  return c;
}

const unary = (c: EchoClient, m: string, headers: Record<string, string> = {}) =>
  new Promise<{ value?: string; code: number }>((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    c.Unary(Buffer.from(m), md, (e, r) => resolve({ value: r?.toString(), code: e?.code ?? grpc.status.OK }));
  });

const v1 = (port: number) => [{ destination: { host: 'proto', subset: 'v1', port: { number: port } } }];
const h2 = (prefix: string) => [{ port: 8082, uri: { prefix } }];
const NO_RETRY = { 'x-no-retry': { exact: '1' } };

const routes = () =>
  istio('VirtualService', 'proto', {
    hosts: ['proto'],
    http: [
      { name: 'grpc-no-retry', match: [{ port: 9090, headers: NO_RETRY }], route: v1(9090), retries: { attempts: 0 } },
      { name: 'grpc', match: [{ port: 9090 }], route: v1(9090), retries: { attempts: 1, retryOn: 'unavailable' } },
      { name: 'refuse-no-retry', match: [{ port: 8082, headers: NO_RETRY }], route: v1(8082), retries: { attempts: 1, retryOn: 'connect-failure' } },
      { name: 'refuse', match: h2('/refuse'), route: v1(8082), retries: { attempts: 1, retryOn: 'refused-stream' } },
      { name: 'goaway', match: h2('/goaway'), route: v1(8082), retries: { attempts: 1, retryOn: 'refused-stream' } },
      { name: 'rst', match: h2('/rst'), route: v1(8082), retries: { attempts: 1, retryOn: 'reset' } },
      { name: 'flaky', match: h2('/h2-flaky'), route: v1(8082), retries: { attempts: 1, retryOn: '5xx' } },
      { name: 'fail', match: h2('/h2-fail'), route: v1(8082), retries: { attempts: 2, retryOn: '5xx' } },
      { name: 'slow', match: h2('/h2-slow'), route: v1(8082), retries: { attempts: 1, retryOn: 'reset', perTryTimeout: '200ms' } },
      { name: 'reset', match: h2('/h2-reset'), route: v1(8082), retries: { attempts: 2, retryOn: 'reset' } },
      { name: 'any', match: h2('/any'), route: [{ destination: { host: 'proto', port: { number: 8082 } } }], retries: { attempts: 1, retryOn: 'reset' } },
    ],
  });

const protoSubsets = () => istio('DestinationRule', 'proto', { host: 'proto', subsets: [{ name: 'v1', labels: { version: 'v1' } }] });
const base = () => [webService(), protoService(), webPod('v1'), webPod('v2'), subsets(), protoSubsets()];
const idle = (s: Stand) => until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
const logOf = (s: Stand, route: string) => s.accessLog.filter((l) => l.route_name === route);
const h2Seen = (s: Stand, prefix: string) => [...s.v1.h2Seen, ...s.v2.h2Seen].filter((x) => x.url.startsWith(prefix));

describe('waypoint retries to HTTP/2 upstreams', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('retries a gRPC UNAVAILABLE (trailers-only) by retryOn unavailable: every call to a backend failing every other one succeeds; without a policy half fail', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(1) });
    const c = await grpcClient(cleanup, s);
    const N = 10;
    for (let i = 0; i < N; i++) expect(await unary(c, `flaky${i}`)).toEqual({ value: `web-v1:flaky${i}`, code: grpc.status.OK });
    // Each call: one UNAVAILABLE, then the retry served.
    expect(s.v1.grpcSeen.filter((m) => m.startsWith('Unary flaky'))).toHaveLength(2 * N);
    expect(s.v2.grpcSeen).toEqual([]);
    await idle(s);
    expect(logOf(s, 'grpc').map((l) => [l.response_code, l.response_flags])).toEqual(Array(N).fill([200, '-']));

    // The same calls on a route with retries off: every other one fails, each called once.
    const codes = [];
    for (let i = 0; i < N; i++) codes.push((await unary(c, `flaky-once${i}`, { 'x-no-retry': '1' })).code);
    expect(codes).toEqual(Array.from({ length: N }, (_, i) => (i % 2 === 0 ? grpc.status.UNAVAILABLE : grpc.status.OK)));
    expect(s.v1.grpcSeen.filter((m) => m.startsWith('Unary flaky-once'))).toHaveLength(N);
  });

  it('retries a gRPC UNAVAILABLE by the control plane\'s default policy (no VirtualService), on the other endpoint', async () => {
    const s = await stand(cleanup, [webService(), protoService(), webPod('v1'), webPod('v2')], { random: seeded(2) });
    const c = await grpcClient(cleanup, s);
    const N = 10;
    for (let i = 0; i < N; i++) expect((await unary(c, `flaky${i}`)).code).toBe(grpc.status.OK);
    const attempts = [...s.v1.grpcSeen, ...s.v2.grpcSeen].filter((m) => m.startsWith('Unary flaky')).length;
    expect(attempts).toBeGreaterThan(N);
    expect(attempts).toBeLessThanOrEqual(3 * N);
  });

  it('does not retry a gRPC stream whose response began (UNAVAILABLE in the trailers after two messages)', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(3) });
    const c = await grpcClient(cleanup, s);
    const feed = async (m: string) => {
      const call = c.Feed(Buffer.from(m));
      call.on('error', () => {});
      const got: string[] = [];
      call.on('data', (d: Buffer) => got.push(d.toString()));
      const st = await new Promise<grpc.StatusObject>((resolve, reject) => {
        call.on('status', resolve);
        setTimeout(() => reject(new Error('no status')), 5000);
      });
      return { code: st.code, got };
    };
    expect(await feed('go')).toEqual({ code: grpc.status.UNAVAILABLE, got: ['web-v1:1', 'web-v1:2'] });
    expect(s.v1.grpcSeen.filter((m) => m.startsWith('Feed'))).toEqual(['Feed go']);
    await idle(s);
    // Not a retriable response (its status came in the trailers): passed on as it came, no URX.
    expect(logOf(s, 'grpc').at(-1)).toMatchObject({ response_code: 200, response_flags: '-' });

    // A trailers-only UNAVAILABLE is retried (the one retry used), then the stream that began fails: still no URX.
    expect(await feed('flaky')).toEqual({ code: grpc.status.UNAVAILABLE, got: ['web-v1:1', 'web-v1:2'] });
    expect(s.v1.grpcSeen.filter((m) => m.startsWith('Feed'))).toEqual(['Feed go', 'Feed flaky', 'Feed flaky']);
    await idle(s);
    expect(logOf(s, 'grpc').at(-1)).toMatchObject({ response_code: 200, response_flags: '-' });
  });

  it('keeps no replay bytes for a gRPC stream once its response began, however much the client sends', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(4) });
    const c = await grpcClient(cleanup, s);
    const chat = c.Chat();
    chat.on('error', () => {});
    const got: string[] = [];
    chat.on('data', (d: Buffer) => got.push(d.toString()));
    chat.write(Buffer.from('hello'));
    await until(() => got.length === 1, 5000, 'the first echo');
    const big = Buffer.alloc(256 * 1024, 'x');
    for (let i = 0; i < 8; i++) chat.write(big);
    await until(() => got.length === 9, 10_000, 'every echo');
    // 2 MiB went up this stream after its response began: none of it is held for a replay.
    expect(s.waypoint.replay.held).toBe(0);
    expect(s.waypoint.replay.peak).toBeLessThan(64 * 1024);
    const status = new Promise<grpc.StatusObject>((r) => chat.on('status', r));
    chat.end();
    expect((await status).code).toBe(grpc.status.OK);
    expect(s.v1.grpcSeen.filter((m) => m === 'Chat')).toHaveLength(1);
  }, 20_000);

  it('retries a refused stream (RST_STREAM REFUSED_STREAM, a stream past a GOAWAY) by retryOn refused-stream, and not without it', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(5) });
    const c = client(cleanup, s, `${PROTO_VIP}:8082`);
    for (const path of ['/refuse', '/goaway']) {
      for (let i = 0; i < 4; i++) {
        const r = await c.request(`${path}/${i}`, { method: 'POST', body: `body${i}`, headers: { host: 'proto' } });
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1', url: `${path}/${i}`, version: '2.0' });
      }
      // Every call: one refused, then one served (with the whole body again).
      expect(h2Seen(s, path).map((x) => x.url)).toEqual([0, 1, 2, 3].flatMap((i) => [`${path}/${i}`, `${path}/${i}`]));
      expect(s.v1.h2Seen.filter((x) => x.url.startsWith(path)).filter((_, i) => i % 2 === 1).map((x) => x.body)).toEqual([5, 5, 5, 5]);
    }
    await idle(s);
    expect([...logOf(s, 'refuse'), ...logOf(s, 'goaway')].map((l) => l.response_flags)).toEqual(Array(8).fill('-'));

    // A route that retries only connect failures passes the refused stream on as Envoy's 503 UR, in Envoy's words.
    const r = await c.request('/refuse/once', { headers: { host: 'proto', 'x-no-retry': '1' } });
    expect(r.status).toBe(503);
    expect(r.body).toBe('upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset');
    expect(h2Seen(s, '/refuse/once')).toHaveLength(1);
    await idle(s);
    expect(logOf(s, 'refuse-no-retry').at(-1)).toMatchObject({ response_code: 503, response_flags: 'UR' });

    // Any other RST_STREAM before a response is a reset: retried by retryOn reset, not by refused-stream.
    for (let i = 0; i < 2; i++) expect((await c.request(`/rst/${i}`, { headers: { host: 'proto' } })).status).toBe(200);
    expect(h2Seen(s, '/rst')).toHaveLength(4);
    const rst = await c.request('/rst/once', { headers: { host: 'proto', 'x-no-retry': '1' } });
    expect(rst.status).toBe(503);
    expect(rst.body).toBe('upstream connect error or disconnect/reset before headers. reset reason: remote reset');
    await idle(s);
    expect(logOf(s, 'rst').map((l) => l.response_flags)).toEqual(['-', '-']);
    expect(logOf(s, 'refuse-no-retry').at(-1)).toMatchObject({ response_code: 503, response_flags: 'UR' });
  });

  it('retries 5xx from an HTTP/2 upstream with the body replayed, not a body past the replay bound, and adds URX when retries run out', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(6) });
    const c = client(cleanup, s, `${PROTO_VIP}:8082`);
    const small = Buffer.alloc(512 * 1024, 1);
    for (let i = 0; i < 2; i++) expect((await c.request('/h2-flaky', { method: 'POST', body: small, headers: { host: 'proto' } })).status).toBe(200);
    expect(h2Seen(s, '/h2-flaky').map((x) => x.body)).toEqual(Array(4).fill(small.length));

    // 8 MiB: past the 1 MiB bound nothing is kept, so its 503 is passed on, the upstream called once.
    const huge = Buffer.alloc(8 * 1024 * 1024, 2);
    const h = await c.request('/h2-flaky', { method: 'POST', body: huge, headers: { host: 'proto' } });
    expect(h.status).toBe(503);
    expect(h2Seen(s, '/h2-flaky').map((x) => x.body)).toEqual([...Array(4).fill(small.length), huge.length]);
    await idle(s);
    expect(logOf(s, 'flaky').at(-1)).toMatchObject({ response_code: 503, response_flags: '-' });
    expect(s.waypoint.replay.peak).toBeLessThanOrEqual(1024 * 1024);
    expect(s.waypoint.replay.held).toBe(0);

    const f = await c.request('/h2-fail', { headers: { host: 'proto' } });
    expect(f.status).toBe(503);
    expect(f.body).toBe('web-v1 failed');
    expect(h2Seen(s, '/h2-fail')).toHaveLength(3);
    await idle(s);
    expect(logOf(s, 'fail').at(-1)).toMatchObject({ response_code: 503, response_flags: 'URX' });
  }, 30_000);

  it('retries a failed connection to an HTTP/2 endpoint on the other one (retryOn reset takes connect failures, as Envoy)', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(8) });
    const c = client(cleanup, s, `${PROTO_VIP}:8082`);
    s.v2.hbone.decide = async () => ({ status: 401, reason: 'refused for the test' });
    for (let i = 0; i < 6; i++) {
      const r = await c.request(`/any/${i}`, { headers: { host: 'proto' } });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1' });
    }
    await idle(s);
    expect(logOf(s, 'any').map((l) => l.response_flags)).toEqual(Array(6).fill('-'));
  });

  it('retries an HTTP/2 attempt past its per-try timeout, and never a response reset once it began', async () => {
    const s = await stand(cleanup, [...base(), routes()], { random: seeded(7) });
    const c = client(cleanup, s, `${PROTO_VIP}:8082`);
    for (let i = 0; i < 2; i++) {
      const r = await c.request('/h2-slow', { headers: { host: 'proto' } });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1' });
    }
    expect(h2Seen(s, '/h2-slow')).toHaveLength(4);

    await expect(c.request('/h2-reset', { headers: { host: 'proto' } })).rejects.toThrow();
    expect(h2Seen(s, '/h2-reset')).toHaveLength(1);
    await idle(s);
    expect(logOf(s, 'reset').at(-1)).toMatchObject({ response_code: 200, response_flags: 'UR' });
  });
});
