// DestinationRule outlierDetection in the waypoint: a pod answering 500 is ejected after
// consecutive5xxErrors (requests go to the other), returns after baseEjectionTime, and a second
// ejection lasts twice as long (Envoy's back-off); Envoy's max_ejection_percent (10% by default)
// keeps a 2-pod service from ejecting at all; with every pod ejected and Istio's panic threshold of 0
// the waypoint answers 503 UH.
import { afterEach, describe, expect, it } from 'vitest';
import type { Cluster, Endpoint } from '../../src/waypoint/router/table.ts';
import { Balancer } from '../../src/waypoint/upstream/balancer.ts';
import { Cleanup, client, HOST, istio, POD_IP, stand, TARGET_PORT, until, webPod, webService } from './harness.ts';

const CLUSTER = `outbound|80||${HOST}`;
const rule = (outlierDetection: object) => [webService(), webPod('v1'), webPod('v2'), istio('DestinationRule', 'web', { host: 'web', trafficPolicy: { outlierDetection } })];
const V1: Endpoint = { address: POD_IP.v1, port: TARGET_PORT };
/** Polls an async condition (one request per poll) until it holds, within `ms`. */
const eventually = async (f: () => Promise<boolean>, ms: number, what: string) => {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('waypoint outlier detection', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('ejects a pod answering 500 after consecutive5xxErrors, sends to the other, and takes it back after baseEjectionTime (twice as long the second time)', async () => {
    const s = await stand(cleanup, rule({ consecutive5xxErrors: 3, interval: '100ms', baseEjectionTime: '2s', maxEjectionPercent: 100 }));
    expect(s.config.table.clusters.get(CLUSTER)).toMatchObject({ panicThreshold: 0, outlier: { consecutive5xx: 3, enforcingConsecutive5xx: 100, intervalMs: 100, baseEjectionTimeMs: 2000, maxEjectionPercent: 100 } });
    const c = client(cleanup, s);
    s.v1.fail = 500;
    const start = Date.now();
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await c.request('/')).status);
    // Round robin: v1 failed three times (every other request), then it was out.
    expect(statuses.filter((x) => x === 500)).toHaveLength(3);
    expect(s.waypoint.balancer.ejections(CLUSTER, V1)).toBe(1);
    const before = s.v1.seen.length;
    for (let i = 0; i < 5; i++) expect(await c.pod('/')).toBe('web-v2');
    expect(s.v1.seen.length).toBe(before);

    // Healthy again, it comes back once the ejection time is over (at a sweep), not before.
    s.v1.fail = undefined;
    await eventually(async () => (await c.pod('/')) === 'web-v1', 10_000, 'v1 back');
    expect(Date.now() - start).toBeGreaterThanOrEqual(2000);

    // A second ejection lasts base x 2.
    s.v1.fail = 500;
    const again = Date.now();
    await eventually(async () => {
      await c.request('/');
      return s.waypoint.balancer.ejections(CLUSTER, V1) === 2;
    }, 5000, 'second ejection');
    s.v1.fail = undefined;
    await eventually(async () => (await c.pod('/')) === 'web-v1', 10_000, 'v1 back again');
    expect(Date.now() - again).toBeGreaterThanOrEqual(4000);
  }, 60_000);

  it("consecutiveGatewayErrors counts 502/503/504 only; Envoy's default max_ejection_percent (10%) ejects nothing from two pods", async () => {
    const s = await stand(cleanup, rule({ consecutiveGatewayErrors: 2, interval: '100ms', baseEjectionTime: '5s', maxEjectionPercent: 50 }));
    const c = client(cleanup, s);
    s.v1.fail = 500; // not a gateway error (and two of them stay under Envoy's default consecutive_5xx of 5)
    for (let i = 0; i < 4; i++) await c.request('/');
    expect(s.waypoint.balancer.ejections(CLUSTER, V1)).toBe(0);
    s.v1.fail = 503;
    for (let i = 0; i < 4; i++) await c.request('/');
    expect(s.waypoint.balancer.ejections(CLUSTER, V1)).toBe(1);
    for (let i = 0; i < 10; i++) expect(await c.pod('/')).toBe('web-v2');

    s.apply(rule({ consecutive5xxErrors: 2, interval: '100ms', baseEjectionTime: '5s' }));
    await until(() => s.config.table.clusters.get(CLUSTER)?.outlier?.maxEjectionPercent === 10, 10_000, 'default max ejection applied');
    s.v2.fail = 500;
    for (let i = 0; i < 20; i++) await c.request('/');
    expect(s.waypoint.balancer.ejections(CLUSTER, { address: POD_IP.v2, port: TARGET_PORT })).toBe(0);
  }, 60_000);

  it('with every endpoint ejected and the panic threshold at 0, answers 503 UH (no healthy upstream)', async () => {
    const s = await stand(cleanup, rule({ consecutive5xxErrors: 1, interval: '100ms', baseEjectionTime: '30s', maxEjectionPercent: 100 }));
    const c = client(cleanup, s);
    s.v1.fail = 500;
    s.v2.fail = 500;
    await c.request('/');
    await c.request('/');
    const r = await c.request('/');
    expect(r.status).toBe(503);
    expect(r.body).toBe('no healthy upstream');
    expect(s.accessLog.at(-1)).toMatchObject({ response_flags: 'UH' });
  }, 60_000);
});

describe('outlier detection, balancer level', () => {
  const A: Endpoint = { address: '10.0.0.1', port: 80 };
  const B: Endpoint = { address: '10.0.0.2', port: 80 };
  const outlier = { intervalMs: 10, baseEjectionTimeMs: 100, maxEjectionTimeMs: 300_000, maxEjectionPercent: 100, alwaysEjectOneHost: false, consecutive5xx: 2, enforcingConsecutive5xx: 100, consecutiveGatewayFailure: 5, enforcingConsecutiveGatewayFailure: 0, failurePercentageThreshold: 85, enforcingFailurePercentage: 0, failurePercentageMinimumHosts: 5, failurePercentageRequestVolume: 50 };

  it("below the panic threshold balances over every host, ejected or not (Envoy's default 50%)", () => {
    let now = 0;
    const b = new Balancer(Math.random, () => now);
    const cluster: Cluster = { name: 'c', edsName: 'c', lb: { kind: 'ROUND_ROBIN' }, outlier, panicThreshold: 50 };
    for (let i = 0; i < 4; i++) {
      const e = b.pick(cluster, [A, B])!;
      b.onResult(cluster, e, e === A ? 500 : 200);
    }
    expect(b.ejections('c', A)).toBe(1);
    // 1 of 2 healthy = 50%: not below the threshold, so A is skipped.
    const picks = Array.from({ length: 4 }, () => b.pick(cluster, [A, B]));
    expect(picks.every((e) => e === B)).toBe(true);
    // At 60% the same state is panic: A is used again.
    const panicky = { ...cluster, panicThreshold: 60 };
    expect(new Set(Array.from({ length: 4 }, () => b.pick(panicky, [A, B])))).toEqual(new Set([A, B]));
    // always_eject_one_host lets one go even under max_ejection_percent.
    const one = new Balancer(Math.random, () => now);
    const strict: Cluster = { ...cluster, name: 'd', outlier: { ...outlier, maxEjectionPercent: 10, alwaysEjectOneHost: true } };
    for (let i = 0; i < 8; i++) {
      const e = one.pick(strict, [A, B])!;
      one.onResult(strict, e, 500);
    }
    expect(one.ejections('d', A) + one.ejections('d', B)).toBe(1);
    now += 1000;
  });

  it('failure-percentage ejection decides at the interval sweep from the interval counts', () => {
    let now = 0;
    const b = new Balancer(Math.random, () => now);
    const fp = { ...outlier, consecutive5xx: 3, failurePercentageThreshold: 50, enforcingFailurePercentage: 100, failurePercentageMinimumHosts: 1, failurePercentageRequestVolume: 4 };
    const cluster: Cluster = { name: 'c', edsName: 'c', lb: { kind: 'ROUND_ROBIN' }, outlier: fp, panicThreshold: 0 };
    let failA = false;
    for (let i = 0; i < 8; i++) {
      const e = b.pick(cluster, [A, B])!;
      if (e === A) failA = !failA; // A alternates 500, 200: never 3 in a row, but half of them fail
      b.onResult(cluster, e, e === A && failA ? 500 : 200);
    }
    expect(b.ejections('c', A)).toBe(0);
    now += 20; // past the interval: the next pick sweeps
    expect(b.pick(cluster, [A, B])).toBe(B);
    expect(b.ejections('c', A)).toBe(1);
    expect(b.ejections('c', B)).toBe(0);
  });

  it('max_retries bounds the retries in flight across the cluster', () => {
    const b = new Balancer();
    const cluster: Cluster = { name: 'c', edsName: 'c', circuit: { maxConnections: 1, maxPendingRequests: 1, maxRequests: 1, maxRetries: 2 } };
    const r1 = b.retry(cluster)!;
    const r2 = b.retry(cluster)!;
    expect(b.retry(cluster)).toBeUndefined();
    r1();
    r1(); // ending twice frees one place only
    expect(b.retry(cluster)).toBeDefined();
    expect(b.retry(cluster)).toBeUndefined();
    r2();
  });
});
