// What a hostile or broken client does to the waypoint's HTTP side, through real HBONE tunnels:
// bytes that are not HTTP, a header block over the limit, a request body cut off by a reset, a
// client that trickles its headers (slowloris) or sits idle. Each is answered or cut off within its
// bound, counted, and leaves nothing behind: tunnels, streams and requests return to 0.
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, client, istio, metric, stand, subsets, until, webPod, webService, type Stand } from './harness.ts';

const objects = () => [webService(), webPod('v1'), webPod('v2'), subsets(), istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'all', route: [{ destination: { host: 'web', subset: 'v1' } }] }] })];

/**
 * Everything the tunnel returns until the waypoint ends or resets it. ('end' too: a client stream
 * reset with NO_ERROR while its own side is still writing closes only once that side finishes.)
 */
const drain = (d: Duplex) =>
  new Promise<string>((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks).toString());
    d.on('data', (c: Buffer) => chunks.push(c));
    d.on('error', () => {});
    d.once('end', done);
    d.once('close', done);
  });

const idle = (s: Stand) => until(() => {
  const st = s.waypoint.stats();
  return st.streams === 0 && st.tunnels === 0 && st.requests === 0 && st.h2Sessions === 0;
}, 5000, 'the waypoint to hold nothing');

describe('waypoint under hostile clients', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('answers bytes that are not HTTP with 400 and closes the tunnel', async () => {
    const s = await stand(cleanup, objects(), { limits: { maxHeaderBytes: 8 * 1024 } });
    const c = client(cleanup, s);
    const t = await c.tunnel();
    const got = drain(t);
    t.write('GARBAGE\x00\x01 / NOT-HTTP\r\n\r\n');
    expect(await got).toMatch(/^HTTP\/1\.1 400 /);
    await idle(s);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '400', response_flags: 'DPE' })).toBe(1);
    expect(await c.pod('/')).toBe('web-v1'); // the waypoint still serves
  });

  it('answers a header block over the limit with 431', async () => {
    const s = await stand(cleanup, objects(), { limits: { maxHeaderBytes: 8 * 1024 } });
    const c = client(cleanup, s);
    const t = await c.tunnel();
    const got = drain(t);
    t.write(`GET / HTTP/1.1\r\nhost: web\r\nx-big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(await got).toMatch(/^HTTP\/1\.1 431 /);
    await idle(s);
    expect(s.v1.seen).toHaveLength(0);
  });

  it('cleans up when the client resets mid-body', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s);
    const t = await c.tunnel();
    t.on('error', () => {});
    t.write('POST /upload HTTP/1.1\r\nhost: web\r\ncontent-length: 10000000\r\n\r\n');
    t.write(Buffer.alloc(256 * 1024, 1));
    await until(() => s.waypoint.stats().requests === 1, 5000, 'the request in flight');
    t.destroy();
    await idle(s);
    await until(() => s.v1.hbone.hbone.stats().streams === 0, 5000, 'the upstream tunnel closed');
    expect(await metric(s.registry, 'istio_requests_total', { response_flags: 'DC' })).toBe(1);
  });

  it('closes a tunnel whose headers trickle past the deadline (slowloris), and an idle keep-alive tunnel', async () => {
    const s = await stand(cleanup, objects(), { limits: { headersTimeoutMs: 300, idleTimeoutMs: 300 } });
    const c = client(cleanup, s);
    const t = await c.tunnel();
    const got = drain(t);
    const start = Date.now();
    t.write('GET / HTTP/1.1\r\n');
    const trickle = setInterval(() => t.writable && t.write('x-a: b\r\n'), 50);
    await got.finally(() => clearInterval(trickle));
    t.destroy();
    expect(Date.now() - start).toBeLessThan(2000);
    await idle(s);

    // A complete request, then silence: closed after the idle time.
    const u = await c.tunnel();
    const reply = drain(u);
    u.write('GET / HTTP/1.1\r\nhost: web\r\n\r\n');
    expect(await reply).toContain('"pod":"web-v1"');
    await idle(s);
    expect(s.v1.seen).toHaveLength(1);
  }, 15_000);

  it('serves HTTP/2 with prior knowledge inside the tunnel', async () => {
    const http2 = await import('node:http2');
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s);
    const t = await c.tunnel();
    const session = http2.connect('http://web', { createConnection: () => t as never });
    session.on('error', () => {});
    const body = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/h2', ':method': 'GET', ':authority': 'web' });
      let out = '';
      req.on('data', (c: Buffer) => (out += c.toString()));
      req.on('end', () => resolve(out));
      req.on('error', reject);
      req.end();
    });
    session.close();
    expect(JSON.parse(body)).toMatchObject({ pod: 'web-v1', url: '/h2' });
    await idle(s);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200' })).toBe(1);
  });
});
