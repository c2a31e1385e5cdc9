// The waypoint's L7 features in the lab, each through a real waypoint pod between two agents, with
// clients that are not weft's own (curl, a grpc-js client, a ws WebSocket client): retries and
// timeouts, fault injection, connection-pool limits, outlier detection, consistent hashing, a
// local rate limit, gRPC routing with statuses preserved, and WebSocket.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, labName, leftovers, podExec, until as untilEvery, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/waypoint-l7-app.yaml', import.meta.url).pathname;
const GRPC_CLIENT = new URL('./fixtures/grpc-client.mjs', import.meta.url).pathname;
const WS_CLIENT = new URL('./fixtures/ws-client.mjs', import.meta.url).pathname;
const lab = labName('wl7');
const CLIENT = 'mall/shopper';

type PodJ = { metadata: { name: string; labels?: Record<string, string> }; status: { podIP: string } };
const waypointMetrics = () => {
  const ip = getJson<PodJ>(lab, 'pods', 'mall').find((p) => p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === 'waypoint')?.status.podIP;
  return spawnSync('ip', ['netns', 'exec', `${lab}.node-0`, 'curl', '-s', '-m', '5', `http://${ip}:15020/metrics`], { encoding: 'utf8' }).stdout;
};
const requestsTotal = (match: Record<string, string>) =>
  waypointMetrics()
    .split('\n')
    .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"') && Object.entries(match).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);

/** Runs curl in the client pod over `urls` (globs allowed); one {code, pod, time} per request. */
function curlAll(args: string[]): { code: number; pod?: string; time: number }[] {
  const out = podExec(lab, CLIENT, ['curl', '-s', '-m', '60', '-w', '\n@@%{http_code} %{time_total}\n', ...args]);
  const res: { code: number; pod?: string; time: number }[] = [];
  let body = '';
  for (const line of out.split('\n')) {
    const m = /^@@(\d+) ([\d.]+)$/.exec(line);
    if (!m) {
      body += line;
      continue;
    }
    res.push({ code: Number(m[1]), pod: /"pod":"([^"]+)"/.exec(body)?.[1], time: Number(m[2]) });
    body = '';
  }
  return res;
}
const count = <T>(xs: T[], f: (x: T) => boolean) => xs.filter(f).length;
const until = (f: () => boolean, ms: number, what: string) => untilEvery(f, ms, what, 500);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('waypoint L7 features in the lab', () => {
  beforeAll(async () => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // Configuration reaches the waypoint over xDS after its pod is ready: wait for the fault route.
    await until(() => curlAll(['http://faulty.mall/?[1-10]']).some((r) => r.code === 418), 60_000, 'the fault injection at the waypoint');
  }, 300_000);
  afterAll(() => {
    weft(['down', '--name', lab]);
    expect(leftovers(lab)).toEqual([]);
  });

  it('retries a backend that fails half its requests with 503 (3 attempts on 5xx): at least 99 % succeed', () => {
    const got = curlAll(['http://retry.mall/flaky?[1-200]']);
    expect(got).toHaveLength(200);
    expect(count(got, (r) => r.code === 200)).toBeGreaterThanOrEqual(198);
  });

  it('answers 504 at the route timeout of a slow backend', () => {
    const [r] = curlAll(['http://slow.mall/?delay=3000']);
    expect(r!.code).toBe(504);
    expect(r!.time).toBeGreaterThanOrEqual(0.5);
    expect(requestsTotal({ destination_service: 'slow.mall.svc.cluster.local', response_code: '504', response_flags: 'UT' })).toBe(1);
  });

  it('aborts half the requests with the VirtualService status (50 % ± 5) and delays by 200 ms as the client times it', () => {
    const got = curlAll(['http://faulty.mall/abort?[1-400]']);
    expect(got).toHaveLength(400);
    const aborted = count(got, (r) => r.code === 418);
    expect(aborted / 400).toBeGreaterThanOrEqual(0.45);
    expect(aborted / 400).toBeLessThanOrEqual(0.55);
    expect(count(got, (r) => r.code !== 418 && r.code !== 200)).toBe(0);
    const delayed = curlAll(['http://faulty.mall/delay?[1-3]']);
    expect(delayed.map((r) => r.code)).toEqual([200, 200, 200]);
    for (const r of delayed) expect(r.time).toBeGreaterThanOrEqual(0.2);
  });

  it('overflows connectionPool limits of 1 under concurrent load as 503, counted with response_flags="UO"', () => {
    const got = curlAll(['-Z', '--parallel-max', '20', '--parallel-immediate', 'http://pool.mall/?delay=300&i=[1-20]']);
    expect(got).toHaveLength(20);
    const overflow = count(got, (r) => r.code === 503);
    expect(overflow).toBeGreaterThan(0);
    expect(count(got, (r) => r.code === 200)).toBeGreaterThan(0);
    expect(requestsTotal({ destination_service: 'pool.mall.svc.cluster.local', response_code: '503', response_flags: 'UO' })).toBe(overflow);
  });

  it('ejects a backend answering 500 and brings it back after baseEjectionTime', async () => {
    const first = curlAll(['http://shaky.mall/?[1-6]']);
    const firstBad = first.findIndex((r) => r.code === 500);
    expect(firstBad).toBeGreaterThanOrEqual(0);
    expect(firstBad).toBeLessThanOrEqual(1); // round robin over two endpoints: the broken one within two requests
    // Ejected: everything after its first 500, within the 5 s ejection, is served by the healthy pod.
    expect(first.slice(firstBad + 1).map((r) => r.code)).toEqual(Array(first.length - firstBad - 1).fill(200));
    const during = curlAll(['http://shaky.mall/?[1-10]']);
    expect(during.map((r) => r.pod)).toEqual(Array(10).fill('echo-v1'));
    await sleep(7000);
    const after = curlAll(['http://shaky.mall/?[1-6]']);
    expect(count(after, (r) => r.code === 500)).toBeGreaterThanOrEqual(1);
  });

  it('keeps a client on one pod for 100 requests by consistentHash on a header', () => {
    const alice = curlAll(['-H', 'x-user: alice', 'http://sticky.mall/?[1-100]']);
    expect(alice).toHaveLength(100);
    expect(new Set(alice.map((r) => r.pod)).size).toBe(1);
    // Different users spread over both versions.
    const pods = new Set<string | undefined>();
    for (let u = 0; u < 12 && pods.size < 2; u++) pods.add(curlAll(['-H', `x-user: user-${u}`, 'http://sticky.mall/'])[0]!.pod);
    expect(pods).toEqual(new Set(['echo-v1', 'echo-v2']));
  });

  it('answers 429 beyond a local rate limit of 10 requests/s, with rate-limit headers', () => {
    const before = requestsTotal({ destination_service: 'limited.mall.svc.cluster.local', response_code: '429', response_flags: 'RL' });
    const got = curlAll(['http://limited.mall/?[1-30]']);
    const ok = count(got, (r) => r.code === 200);
    const limited = count(got, (r) => r.code === 429);
    expect(ok + limited).toBe(30);
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(limited).toBeGreaterThanOrEqual(5);
    expect(requestsTotal({ destination_service: 'limited.mall.svc.cluster.local', response_code: '429', response_flags: 'RL' }) - before).toBe(limited);
    const headers = podExec(lab, CLIENT, ['sh', '-c', 'for i in $(seq 1 25); do curl -s -o /dev/null -D - http://limited.mall/; done']);
    expect(headers).toMatch(/^HTTP\/1.1 429/m);
    expect(headers).toMatch(/^x-ratelimit-limit: 10/im);
  });

  it('routes gRPC by GRPCRoute: a method match and an 80/20 split for a grpc-js client, with grpc-status and message preserved', () => {
    const grpc = (call: string, n: number, ...rest: string[]) =>
      podExec(lab, CLIENT, ['node', GRPC_CLIENT, 'grpc.mall:9090', call, String(n), ...rest])
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { pod?: string; code?: number; details?: string; stream?: string[] });
    expect(grpc('Version', 20).map((r) => r.pod)).toEqual(Array(20).fill('grpc-v2'));
    const said = grpc('Say', 300);
    const v1 = count(said, (r) => r.pod === 'grpc-v1');
    expect(count(said, (r) => r.pod === 'grpc-v1' || r.pod === 'grpc-v2')).toBe(300);
    expect(v1 / 300).toBeGreaterThanOrEqual(0.72);
    expect(v1 / 300).toBeLessThanOrEqual(0.88);
    expect(grpc('Fail', 1, '5', 'no such thing')).toEqual([{ code: 5, details: 'no such thing' }]);
    expect(grpc('Count', 1, '4')).toEqual([{ stream: ['0', '1', '2', '3'] }]);
    expect(requestsTotal({ destination_service: 'grpc.mall.svc.cluster.local', request_protocol: 'grpc', grpc_response_status: '5' })).toBe(1);
  });

  it('carries a WebSocket through the waypoint', () => {
    const lines = podExec(lab, CLIENT, ['node', WS_CLIENT, 'ws://chat.mall/ws', 'hello', 'again']).trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^echo-v[12]: hello$/);
    expect(lines[1]).toMatch(/^echo-v[12]: again$/);
  });
});
