// Leader election over a coordination.k8s.io/v1 Lease against the fake API server: of two
// replicas exactly one leads, never both at once; a released lease is taken at once, a lease
// another holder keeps renewing never is, an abandoned one is after its duration; a leader that
// cannot renew steps down before the others may take over.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { loadKubeConfig } from '../../src/control/config/kube-api.ts';
import { LeaderElector } from '../../src/control/leader.ts';
import { FakeApiServer } from './config/fake-apiserver.ts';
import { until } from '../util/until.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const LEASE = { kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases' };
// Short timings for the test; the ratios are client-go's (renew deadline < duration, retry < deadline).
const TIMING = { leaseDurationSeconds: 1, renewDeadlineMs: 600, retryPeriodMs: 100 };

async function setup() {
  const api = await FakeApiServer.start();
  api.serve(LEASE);
  const dir = mkdtempSync(join(tmpdir(), 'weft-leader-'));
  cleanups.push(async () => {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kc = loadKubeConfig({ kubeconfig: api.writeKubeconfig(dir) });
  const candidate = (identity: string) => {
    const c = { identity, leading: false, starts: 0, stops: 0, elector: undefined as unknown as LeaderElector };
    c.elector = new LeaderElector(kc, {
      namespace: 'istio-system',
      name: 'weft-control-leader',
      identity,
      ...TIMING,
      log: pino({ level: 'silent' }),
      onStartedLeading: () => {
        c.leading = true;
        c.starts++;
      },
      onStoppedLeading: () => {
        c.leading = false;
        c.stops++;
      },
    });
    cleanups.push(() => c.elector.stop());
    return c;
  };
  return { api, candidate };
}

describe('LeaderElector', () => {
  it('two replicas: one leads, never both; a released lease goes to the other at once', async () => {
    const { api, candidate } = await setup();
    const a = candidate('a');
    const b = candidate('b');
    a.elector.start();
    b.elector.start();
    let both = 0;
    const watch = setInterval(() => a.leading && b.leading && both++, 5);
    cleanups.push(() => clearInterval(watch));
    await until('a leader', () => a.leading || b.leading, 5000);
    await new Promise((r) => setTimeout(r, 1500)); // well past a lease duration: still one, the same one
    const [leader, follower] = a.leading ? [a, b] : [b, a];
    expect(leader.leading && !follower.leading).toBe(true);
    expect(leader.starts).toBe(1);
    expect(api.get('Lease', 'istio-system', 'weft-control-leader')?.spec).toMatchObject({ holderIdentity: leader.identity, leaseDurationSeconds: 1 });

    const released = Date.now();
    await leader.elector.stop();
    expect(leader.leading).toBe(false);
    await until('the other replica leads', () => follower.leading, 5000);
    // Taken on its next try, not after the lease duration.
    expect(Date.now() - released).toBeLessThan(1000);
    expect(api.get('Lease', 'istio-system', 'weft-control-leader')?.spec).toMatchObject({ holderIdentity: follower.identity, leaseTransitions: 1 });
    expect(both).toBe(0);
  });

  it('does not take a lease its holder keeps renewing (whatever its renewTime claims); takes it once the holder stops', async () => {
    const { api, candidate } = await setup();
    // A holder whose clock is far behind: its renewTime is in the past, but it keeps renewing.
    const hold = () => api.apply({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'weft-control-leader', namespace: 'istio-system' }, spec: { holderIdentity: 'other', leaseDurationSeconds: 1, renewTime: '2001-01-01T00:00:00.000000Z' } });
    hold();
    const renew = setInterval(hold, 200);
    cleanups.push(() => clearInterval(renew));
    const c = candidate('c');
    c.elector.start();
    await new Promise((r) => setTimeout(r, 2000));
    expect(c.starts).toBe(0);
    clearInterval(renew);
    const stopped = Date.now();
    await until('the abandoned lease taken', () => c.leading, 5000);
    // Not before a lease duration has passed without a change.
    expect(Date.now() - stopped).toBeGreaterThanOrEqual(800);
    expect(api.get('Lease', 'istio-system', 'weft-control-leader')?.spec).toMatchObject({ holderIdentity: 'c', leaseTransitions: 1 });
  });

  it('a leader that cannot renew stops its duties before the lease can expire for the others', async () => {
    const { api, candidate } = await setup();
    const a = candidate('a');
    a.elector.start();
    await until('a leads', () => a.leading, 5000);
    const lastRenewal = () => Date.parse(String((api.get('Lease', 'istio-system', 'weft-control-leader')?.spec as { renewTime: string }).renewTime));
    api.fault = (r) => (r.path.includes('/leases') ? 503 : undefined);
    const cutOff = lastRenewal();
    await until('a steps down', () => !a.leading, 5000);
    expect(a.stops).toBe(1);
    // Before the others could take it (last renewal + lease duration).
    expect(Date.now()).toBeLessThan(cutOff + 1000);
    // The API back: it leads again.
    api.fault = undefined;
    await until('a leads again', () => a.leading, 5000);
    expect(a.starts).toBe(2);
  });

  it('refuses timings where two leaders could overlap', () => {
    const log = pino({ level: 'silent' });
    const o = { namespace: 'ns', name: 'l', identity: 'x', log, onStartedLeading: () => {}, onStoppedLeading: () => {} };
    const kc = new KubeConfig();
    expect(() => new LeaderElector(kc, { ...o, leaseDurationSeconds: 5, renewDeadlineMs: 5000 })).toThrow(/renew deadline .* must be shorter than the lease duration/);
    expect(() => new LeaderElector(kc, { ...o, renewDeadlineMs: 2000, retryPeriodMs: 2000 })).toThrow(/retry period .* must be shorter than the renew deadline/);
  });
});
