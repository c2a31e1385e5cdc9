// The waypoint's drain (SIGTERM; waypoint.ts drain, inbound/tunnels.ts), through real HBONE
// tunnels (mTLS, HTTP/2 CONNECT) to real backends: an HTTP/1.1 keep-alive client gets its response
// in flight with `Connection: close` and a clean end, an idle one is closed at once; an HTTP/2
// client gets GOAWAY and its stream completes; TCP and WebSocket tunnels keep relaying until the
// deadline closes them; nothing new is accepted once the drain began; and a hostile client (pipelining
// requests, a body that never ends) cannot keep the waypoint past the deadline.
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import type { HboneOutcome } from '../../src/hbone/server/contract.ts';
import { drainDeadlineMs } from '../../src/waypoint/main.ts';
import { Cleanup, client, istio, protoService, PROTO_VIP, stand, subsets, until, webPod, webService, type Stand } from './harness.ts';

const objects = () => [
  webService(), protoService(), webPod('v1'), webPod('v2'), subsets(),
  istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'all', route: [{ destination: { host: 'web', subset: 'v1' } }] }] }),
];

/** A tunnel's bytes as they come, and how it ended: 'end' (the waypoint's END_STREAM) or 'error'. */
function watch(t: Duplex) {
  const w = { text: '', ended: false, error: undefined as Error | undefined, closed: false };
  t.on('data', (c: Buffer) => (w.text += c.toString()));
  t.on('end', () => {
    w.ended = true;
    t.end(); // as a client told `Connection: close` does
  });
  t.on('error', (e: Error) => (w.error = e));
  t.once('close', () => (w.closed = true));
  return w;
}

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nhost: web\r\n${extra}\r\n`;
const responses = (text: string) => text.split(/(?=HTTP\/1\.1 \d{3} )/).filter(Boolean);

const idle = (s: Stand) => until(() => {
  const st = s.waypoint.stats();
  return st.streams === 0 && st.tunnels === 0 && st.requests === 0 && st.h2Sessions === 0 && st.tcp === 0;
}, 5000, 'the waypoint to hold nothing');

describe('waypoint drain', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('HTTP/1.1: the response in flight says Connection: close and the tunnel ends cleanly; an idle keep-alive tunnel is closed at once', async () => {
    const outcomes: HboneOutcome[] = [];
    const s = await stand(cleanup, objects(), { onTunnel: (o) => outcomes.push(o) });
    const c = client(cleanup, s);
    const busy = await c.tunnel();
    const b = watch(busy);
    const quiet = await c.tunnel();
    const q = watch(quiet);
    // Both mid-conversation: one response each, kept alive.
    busy.write(get('/first'));
    quiet.write(get('/first'));
    await until(() => responses(b.text).length === 1 && responses(q.text).length === 1, 5000, 'the first responses');
    expect(responses(b.text)[0]).toMatch(/connection: keep-alive/i);
    busy.write(get('/delay/800'));
    await until(() => s.waypoint.stats().requests === 1, 5000, 'the second request in flight');

    expect(s.waypoint.draining).toBe(false);
    const drained = s.waypoint.drain(20_000);
    expect(s.waypoint.draining).toBe(true);
    // The idle one: ended by the waypoint (END_STREAM), no response, no reset.
    await until(() => q.closed, 5000, 'the idle tunnel to close');
    expect(q.ended).toBe(true);
    expect(q.error).toBeUndefined();
    expect(responses(q.text)).toHaveLength(1);

    const report = await drained;
    const last = responses(b.text);
    expect(last).toHaveLength(2);
    expect(last[1]).toMatch(/^HTTP\/1\.1 200 /);
    expect(last[1]).toMatch(/\r\nconnection: close\r\n/i);
    expect(last[1]).toContain('"url":"/delay/800"');
    expect(b.ended).toBe(true);
    expect(b.error).toBeUndefined();
    // Everything ended on its own, before the deadline: nothing was cut, no tunnel broke.
    expect(report.cut).toBeUndefined();
    expect(report.atStart).toMatchObject({ tunnels: 2, requests: 1 });
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    expect(outcomes.map((o) => o.status)).toEqual([200, 200]);
    await until(() => s.waypoint.stats().sessions === 0, 5000, 'the HBONE session gone');
    await idle(s);
  }, 30_000);

  it('HTTP/1.1: a response already under way finishes and then its tunnel ends; a tunnel opened before the drain has its first request served, with Connection: close', async () => {
    const outcomes: HboneOutcome[] = [];
    const s = await stand(cleanup, objects(), { onTunnel: (o) => outcomes.push(o) });
    const c = client(cleanup, s);
    // An upload echoed back as it arrives: the response's headers are out before its body is.
    const up = await c.tunnel();
    const u = watch(up);
    up.write('POST /echo HTTP/1.1\r\nhost: web\r\ncontent-length: 10\r\n\r\nhello');
    await until(() => u.text.includes('hello'), 5000, 'the echo under way');
    expect(u.text).toMatch(/\r\nconnection: keep-alive\r\n/i);
    // Opened, nothing sent yet.
    const fresh = await c.tunnel();
    const f = watch(fresh);
    await until(() => s.waypoint.stats().tunnels === 2, 5000, 'both tunnels at the waypoint');

    const drained = s.waypoint.drain(20_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(u.closed || f.closed).toBe(false);
    up.write('world');
    fresh.write(get('/fresh'));
    const report = await drained;
    expect(u.text).toMatch(/\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n$/); // the whole body, its last chunk
    expect(u.ended).toBe(true);
    expect(u.error).toBeUndefined();
    expect(responses(f.text)).toHaveLength(1);
    expect(f.text).toMatch(/^HTTP\/1\.1 200 [^]*\r\nconnection: close\r\n[^]*"url":"\/fresh"/i);
    expect(f.ended).toBe(true);
    expect(f.error).toBeUndefined();
    expect(report.cut).toBeUndefined();
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    await idle(s);
  }, 30_000);

  it('a WebSocket keeps relaying through the drain and is closed at the deadline', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:80`);
    const t = await c.tunnel();
    const w = watch(t);
    t.write('GET /ws HTTP/1.1\r\nhost: proto\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n');
    await until(() => w.text.includes('\r\n\r\n'), 5000, 'the 101');
    expect(w.text).toMatch(/^HTTP\/1\.1 101 /);
    const drained = s.waypoint.drain(1500);
    await new Promise((r) => setTimeout(r, 500));
    t.write('ping');
    await until(() => w.text.endsWith('ping'), 5000, 'the echo during the drain');
    const report = await drained;
    expect(report.cut?.tunnels).toBe(1);
    await until(() => w.closed, 5000, 'the WebSocket closed');
    await idle(s);
  }, 30_000);

  it('HTTP/2: the client gets GOAWAY and its stream in flight completes', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s);
    const t = await c.tunnel();
    const session = http2.connect('http://web', { createConnection: () => t as never });
    session.on('error', () => {});
    let goaway: number | undefined;
    session.on('goaway', (code: number) => (goaway = code));
    const body = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = session.request({ ':path': '/delay/800', ':method': 'GET', ':authority': 'web' });
      let status = 0;
      let out = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => (out += d.toString()));
      req.on('end', () => resolve({ status, body: out }));
      req.on('error', reject);
      req.end();
    });
    await until(() => s.waypoint.stats().requests === 1, 5000, 'the stream in flight');
    const drained = s.waypoint.drain(20_000);
    await until(() => goaway !== undefined, 5000, 'GOAWAY');
    expect(goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    // No new stream on a session that said GOAWAY.
    expect(() => session.request({ ':path': '/', ':authority': 'web' })).toThrow();
    const r = await body;
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1', url: '/delay/800' });
    const report = await drained;
    expect(report.cut).toBeUndefined();
    await idle(s);
  }, 30_000);

  it('a TCP tunnel keeps relaying through the drain and is closed at the deadline; nothing new is accepted meanwhile', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:7000`);
    const t = await c.tunnel();
    const w = watch(t);
    t.write('before ');
    await until(() => w.text === 'before ', 5000, 'the echo');
    const start = Date.now();
    let settled = false;
    const drained = s.waypoint.drain(1500).finally(() => (settled = true));
    // Well into the drain, the tunnel still relays both ways.
    await new Promise((r) => setTimeout(r, 500));
    t.write('during');
    await until(() => w.text === 'before during', 5000, 'the echo during the drain');
    expect(settled).toBe(false);

    // A new HBONE connection is refused (the listener is closed), and so is a new tunnel from a
    // client that had a connection (its session got GOAWAY: it must dial anew).
    await expect(client(cleanup, s, `${PROTO_VIP}:7000`).tunnel()).rejects.toThrow();
    await expect(c.tunnel()).rejects.toThrow();

    const report = await drained;
    expect(Date.now() - start).toBeGreaterThanOrEqual(1400);
    await until(() => w.closed, 5000, 'the tunnel closed');
    expect(report.cut).toMatchObject({ tcp: 1 });
    expect(w.text).toBe('before during');
    await idle(s);
  }, 30_000);

  it('a hostile client cannot keep the waypoint past the deadline: pipelined requests stop being served, a body that never ends is cut', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s);
    // One client pipelines request after request without waiting for answers (each takes 300 ms,
    // so several are in flight at any time).
    const flood = await c.tunnel();
    const f = watch(flood);
    let n = 0;
    const send = () => flood.writable && !f.ended && flood.write(get(`/delay/300?flood=${n++}`));
    send();
    const pump = setInterval(send, 20);
    cleanup.add(() => clearInterval(pump));
    // Another sends a body that never ends, and never reads.
    const slow = await c.tunnel();
    const sl = watch(slow);
    slow.write('POST /upload HTTP/1.1\r\nhost: web\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n');
    const trickle = setInterval(() => slow.writable && slow.write('1\r\nx\r\n'), 50);
    cleanup.add(() => clearInterval(trickle));
    await until(() => n > 5 && s.waypoint.stats().requests >= 1, 5000, 'both clients busy');

    const start = Date.now();
    const report = await s.waypoint.drain(2000);
    clearInterval(pump);
    clearInterval(trickle);
    // Bounded by the deadline (plus the grace for connections to go), not by the clients.
    expect(Date.now() - start).toBeLessThan(2000 + 2000 + 1000);
    expect(report.cut?.tunnels).toBeGreaterThanOrEqual(1);
    // The flood: every request taken before the drain was answered, the last with Connection: close,
    // and none after it was sent upstream though the client kept sending.
    const served = responses(f.text);
    const upstream = s.v1.seen.filter((r) => r.url.includes('flood=')).length;
    expect(served.every((r) => r.startsWith('HTTP/1.1 200 '))).toBe(true);
    expect(served.at(-1)).toMatch(/\r\nconnection: close\r\n/i);
    expect(served.slice(0, -1).every((r) => /\r\nconnection: keep-alive\r\n/i.test(r))).toBe(true);
    expect(upstream).toBe(served.length);
    expect(n).toBeGreaterThan(served.length);
    expect(f.ended).toBe(true);
    await until(() => sl.closed, 5000, 'the upload cut');
    await idle(s);
  }, 30_000);

  it('a second drain call can only bring the deadline nearer, and resolves with the first', async () => {
    const s = await stand(cleanup, objects());
    const c = client(cleanup, s, `${PROTO_VIP}:7000`);
    const t = await c.tunnel();
    const w = watch(t);
    t.write('x');
    await until(() => w.text === 'x', 5000, 'the echo');
    const first = s.waypoint.drain(Infinity); // no deadline
    await new Promise((r) => setTimeout(r, 300));
    expect(w.closed).toBe(false);
    const second = s.waypoint.drain(0); // now (a second SIGINT)
    expect(second).toBe(first);
    const report = await first;
    expect(report.cut).toMatchObject({ tcp: 1 });
    await until(() => w.closed, 5000, 'the tunnel closed');
  }, 30_000);
});

describe('--drain-deadline', () => {
  it('takes seconds from the flag, else WEFT_DRAIN_DEADLINE, else 30; 0 is no deadline; anything else is an error naming its source', () => {
    expect(drainDeadlineMs(undefined, undefined)).toBe(30_000);
    expect(drainDeadlineMs(undefined, '')).toBe(30_000);
    expect(drainDeadlineMs(undefined, '12')).toBe(12_000);
    expect(drainDeadlineMs('2.5', '12')).toBe(2500);
    expect(drainDeadlineMs('0', undefined)).toBe(Infinity);
    expect(() => drainDeadlineMs('-1', undefined)).toThrow(/--drain-deadline: "-1" is not a number of seconds/);
    expect(() => drainDeadlineMs('30s', undefined)).toThrow(/--drain-deadline/);
    expect(() => drainDeadlineMs('', undefined)).toThrow(/--drain-deadline/);
    expect(() => drainDeadlineMs(undefined, 'soon')).toThrow(/WEFT_DRAIN_DEADLINE: "soon"/);
    expect(() => drainDeadlineMs(undefined, 'Infinity')).toThrow(/WEFT_DRAIN_DEADLINE/);
  });
});
