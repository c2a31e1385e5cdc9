// DestinationRule load balancing through the waypoint, end to end (harness.ts: the control plane
// translates the rule, the waypoint compiles the cluster's lb policy and the routes' hash_policy):
// consistent hashing on a header, a query parameter, the client's address and a cookie (generated
// with Envoy's Set-Cookie when absent), over a ring or a Maglev table; RANDOM and LEAST_REQUEST
// spreading; a port-level setting overriding the rule's top level.
import { afterEach, describe, expect, it } from 'vitest';
import type { Cluster, Endpoint } from '../../src/waypoint/router/table.ts';
import { Balancer } from '../../src/waypoint/upstream/balancer.ts';
import { Cleanup, client, istio, stand, until, webPod, webService } from './harness.ts';

const base = () => [webService(), webPod('v1'), webPod('v2')];
const rule = (trafficPolicy: object) => istio('DestinationRule', 'web', { host: 'web', trafficPolicy });

type Client = ReturnType<typeof client>;
const tally = async (n: number, f: (i: number) => Promise<string>) => {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const pod = await f(i);
    counts[pod] = (counts[pod] ?? 0) + 1;
  }
  return counts;
};
/** How many of `users` distinct keys land on each pod, and whether each user always lands on one. */
const spread = async (c: Client, users: number, path: (u: number) => string, headers: (u: number) => Record<string, string> = () => ({})) => {
  const home = new Map<number, string>();
  for (let round = 0; round < 3; round++)
    for (let u = 0; u < users; u++) {
      const pod = await c.pod(path(u), headers(u));
      if (home.has(u)) expect(pod, `user ${u} moved`).toBe(home.get(u));
      home.set(u, pod);
    }
  return tally(users, async (u) => home.get(u)!);
};

describe('waypoint load balancing', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('consistentHash on a header keeps a client on one pod for 100 requests, and different values spread', async () => {
    const s = await stand(cleanup, [...base(), rule({ loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } })]);
    const c = client(cleanup, s);
    expect(s.config.table.clusters.get('outbound|80||web.conf.svc.cluster.local')?.lb).toEqual({ kind: 'RING_HASH', minimumRingSize: 1024, maximumRingSize: 8_388_608 });
    const alice = await tally(100, () => c.pod('/', { 'x-user': 'alice' }));
    expect(Object.values(alice)).toEqual([100]);
    const counts = await spread(c, 40, () => '/', (u) => ({ 'x-user': `user-${u}` }));
    expect(counts['web-v1']).toBeGreaterThan(5);
    expect(counts['web-v2']).toBeGreaterThan(5);
    // Without the header there is no hash: the ring picks at random, so both pods serve.
    const anon = await tally(60, () => c.pod('/'));
    expect(Object.keys(anon).sort()).toEqual(['web-v1', 'web-v2']);
  }, 60_000);

  it('hashes a query parameter, over a Maglev table', async () => {
    const s = await stand(cleanup, [...base(), rule({ loadBalancer: { consistentHash: { httpQueryParameterName: 'user', maglev: { tableSize: 251 } } } })]);
    const c = client(cleanup, s);
    expect(s.config.table.clusters.get('outbound|80||web.conf.svc.cluster.local')?.lb).toEqual({ kind: 'MAGLEV', tableSize: 251 });
    const counts = await spread(c, 40, (u) => `/items?user=u${u}&page=1`);
    expect(counts['web-v1']).toBeGreaterThan(5);
    expect(counts['web-v2']).toBeGreaterThan(5);
  }, 60_000);

  it("useSourceIp keeps every request of one client address on one pod", async () => {
    const s = await stand(cleanup, [...base(), rule({ loadBalancer: { consistentHash: { useSourceIp: true } } })]);
    const c = client(cleanup, s);
    const counts = await tally(50, (i) => c.pod(`/any/${i}`, { 'x-user': `u${i}` }));
    expect(Object.values(counts)).toEqual([50]);
  }, 60_000);

  it('consistentHash on a cookie sets the cookie when absent (ttl), and the cookie then keeps the client on one pod', async () => {
    const s = await stand(cleanup, [...base(), rule({ loadBalancer: { consistentHash: { httpCookie: { name: 'session', path: '/shop', ttl: '60s' } } } })]);
    const c = client(cleanup, s);
    const first = await c.request('/shop/cart');
    expect(first.status).toBe(200);
    const setCookie = first.headers['set-cookie'];
    expect(setCookie).toHaveLength(1);
    expect(setCookie![0]).toMatch(/^session="[0-9a-f]{16}"; Max-Age=60; Path=\/shop; HttpOnly$/);
    const cookie = setCookie![0]!.split(';')[0]!;
    const pod = (JSON.parse(first.body) as { pod: string }).pod;
    const counts = await tally(30, () => c.pod('/shop/item', { cookie: `theme=dark; ${cookie}` }));
    expect(counts).toEqual({ [pod]: 30 });
    // A request that carries the cookie gets no new one.
    expect((await c.request('/shop', { headers: { cookie } })).headers['set-cookie']).toBeUndefined();
    // Different sessions spread.
    const spreadCounts = await spread(c, 40, () => '/shop', (u) => ({ cookie: `session="s${u}"` }));
    expect(spreadCounts['web-v1']).toBeGreaterThan(5);
    expect(spreadCounts['web-v2']).toBeGreaterThan(5);
  }, 60_000);

  it('RANDOM and LEAST_REQUEST spread over both pods', async () => {
    const s = await stand(cleanup, [...base(), rule({ loadBalancer: { simple: 'RANDOM' } })]);
    const c = client(cleanup, s);
    const random = await tally(200, () => c.pod('/'));
    expect(random['web-v1']).toBeGreaterThan(40);
    expect(random['web-v2']).toBeGreaterThan(40);

    s.apply([...base(), rule({ loadBalancer: { simple: 'LEAST_REQUEST' } })]);
    await until(() => s.config.table.clusters.get('outbound|80||web.conf.svc.cluster.local')?.lb?.kind === 'LEAST_REQUEST', 10_000, 'LEAST_REQUEST applied');
    const least = await tally(200, () => c.pod('/'));
    expect(least['web-v1']).toBeGreaterThan(40);
    expect(least['web-v2']).toBeGreaterThan(40);

  }, 60_000);

  it("a port-level setting replaces the rule's top level for its port, a subset's policy replaces the rule's", async () => {
    const s = await stand(cleanup, [
      ...base(),
      istio('DestinationRule', 'web', {
        host: 'web',
        trafficPolicy: { loadBalancer: { simple: 'RANDOM' }, portLevelSettings: [{ port: { number: 80 }, loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } }] },
        subsets: [{ name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } } }, { name: 'v2', labels: { version: 'v2' } }],
      }),
    ]);
    const clusters = s.config.table.clusters;
    expect(clusters.get('outbound|80||web.conf.svc.cluster.local')?.lb?.kind).toBe('RING_HASH');
    expect(clusters.get('outbound|80|v1|web.conf.svc.cluster.local')?.lb?.kind).toBe('LEAST_REQUEST');
    expect(clusters.get('outbound|80|v2|web.conf.svc.cluster.local')?.lb?.kind).toBe('RING_HASH');
    const c = client(cleanup, s);
    expect(Object.values(await tally(30, () => c.pod('/', { 'x-user': 'bob' })))).toEqual([30]);
  }, 60_000);
});

describe('waypoint balancer', () => {
  const A: Endpoint = { address: '10.0.0.1', port: 80 };
  const B: Endpoint = { address: '10.0.0.2', port: 80 };
  const share = (lb: Cluster['lb']) => {
    const b = new Balancer();
    const cluster: Cluster = { name: 'c', edsName: 'c', lb };
    let onB = 0;
    for (let i = 0; i < 400; i++) {
      const e = b.pick(cluster, [A, B])!;
      // Requests to A never finish: A's active count only grows.
      if (e === B) {
        onB++;
        b.onResult(cluster, e, 200);
      }
    }
    return onB / 400;
  };

  it('LEAST_REQUEST picks the endpoint with fewer requests in flight of two random choices (A gets only double picks)', () => {
    expect(share({ kind: 'LEAST_REQUEST', choiceCount: 2 })).toBeGreaterThan(0.65);
    expect(share({ kind: 'LEAST_REQUEST', choiceCount: 10 })).toBeGreaterThan(0.95);
    expect(share({ kind: 'ROUND_ROBIN' })).toBe(0.5);
  });
});
