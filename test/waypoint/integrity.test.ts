// The waypoint under concurrency, through real HBONE both ways: many exchanges at once on shared
// sessions (the client's to the waypoint, the waypoint's to each endpoint), no request failed by a
// session, and every byte of every body as sent.
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, client, istio, stand, subsets, webPod, webService, type Stand } from './harness.ts';

const routes = () =>
  istio('VirtualService', 'web', {
    hosts: ['web'],
    http: [{ name: 'split', route: [{ destination: { host: 'web', subset: 'v1' }, weight: 90 }, { destination: { host: 'web', subset: 'v2' }, weight: 10 }] }],
  });

/** Text no other body shares: every 16-byte word names its body and offset. */
function body(id: number, size: number): string {
  let s = '';
  for (let off = 0; s.length < size; off += 16) s += `${id.toString(36).padStart(6, '.')}@${off.toString(36).padStart(8, '.')};`;
  return s.slice(0, size);
}

/** Runs `one` for ids 0..n-1, `width` at a time; what it returns (a problem) is collected. */
async function concurrently(n: number, width: number, one: (id: number) => Promise<string | undefined>): Promise<string[]> {
  const bad: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const id = next++;
        const problem = await one(id).catch((e: Error) => `${id}: ${e.message}`);
        if (problem) bad.push(problem);
      }
    }),
  );
  return bad;
}

const failures = (s: Stand) => s.accessLog.filter((l) => l.response_flags !== '-').map((l) => `${String(l.response_code)} ${String(l.response_flags)} ${String(l.response_code_details)}`);

describe('waypoint under concurrency', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  // Each request is a tunnel (an HTTP/2 stream) on the waypoint's one session to the endpoint, far
  // more than nghttp2 lets a client reset on a session (a burst of 1000, then 33 a second, before
  // GOAWAY(INTERNAL_ERROR) as a rapid-reset attack): a tunnel that ended with a reset instead of
  // END_STREAM failed the requests in flight with 503 UC "Session closed with error code 2".
  it('answers 3000 requests, 64 at a time, on shared sessions, each with its own response', async () => {
    const s = await stand(cleanup, [webService(), webPod('v1'), webPod('v2'), subsets(), routes()]);
    const c = client(cleanup, s);
    const bad = await concurrently(3000, 64, async (id) => {
      const r = await c.request(`/split?i=${id}`);
      const pod = r.body.includes('web-v2') ? 'web-v2' : 'web-v1';
      const want = JSON.stringify({ pod, url: `/split?i=${id}`, body: 0 });
      return r.status === 200 && r.body === want ? undefined : `${id}: ${r.status} ${JSON.stringify(r.body.slice(0, 60))}`;
    });
    expect({ bad: bad.slice(0, 5), count: bad.length, failed: failures(s).slice(0, 5) }).toEqual({ bad: [], count: 0, failed: [] });
    expect(s.accessLog).toHaveLength(3000);
  }, 300_000);

  it('relays 600 distinct bodies both ways, 64 at a time, byte for byte', async () => {
    const s = await stand(cleanup, [webService(), webPod('v1'), webPod('v2'), subsets(), routes()]);
    const c = client(cleanup, s);
    const sizes = [1, 100, 4095, 4096, 4097, 16_384, 65_536, 70_000, 300_000];
    const bad = await concurrently(600, 64, async (id) => {
      const sent = body(id, sizes[id % sizes.length]!);
      const r = await c.request(`/echo?i=${id}`, { method: 'POST', body: sent });
      if (r.status === 200 && r.body === sent) return undefined;
      let at = 0;
      while (at < Math.min(r.body.length, sent.length) && r.body[at] === sent[at]) at++;
      return `${id}: ${r.status}, ${r.body.length} of ${sent.length} bytes, first difference at ${at}: ${JSON.stringify(r.body.slice(at, at + 24))}`;
    });
    expect({ bad: bad.slice(0, 5), count: bad.length, failed: failures(s).slice(0, 5) }).toEqual({ bad: [], count: 0, failed: [] });
  }, 300_000);
});
