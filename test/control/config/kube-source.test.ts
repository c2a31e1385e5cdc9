// KubeSource against the fake API server: sync, changes, bookmarks, 410 relists, validation with
// last-good versions, and resources that are not served.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ConfigSnapshot } from '../../../src/control/config/config-store.ts';
import { KUBE_RESOURCES, loadKubeConfig } from '../../../src/control/config/kube-api.ts';
import { KubeSource } from '../../../src/control/config/kube-source.ts';
import type { KObject } from '../../../src/kube/objects.ts';
import { FakeApiServer, type FakeObject } from './fake-apiserver.ts';
import { until } from '../../util/until.ts';
import { sleep } from '../../../src/util/sleep.ts';

const tmp = mkdtempSync(join(tmpdir(), 'weft-kube-source-'));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const service = (name: string, port = 80, namespace = 'default'): FakeObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace },
  spec: { selector: { app: name }, ports: [{ port, targetPort: 8080 }] },
});
const namespace = (name: string): FakeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
const pod = (name: string): FakeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'default', labels: { app: 'web' } },
  spec: { containers: [{ name: 'app', image: 'nginx' }], nodeName: 'node-1' },
  status: { phase: 'Running', podIP: '10.0.0.5' },
});
const policy = (name: string): FakeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'default' },
  spec: { action: 'DENY', rules: [{}] },
});
const httpRoute = (name: string): FakeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'default' },
  spec: { parentRefs: [{ name: 'web', kind: 'Service', group: '' }] },
});


const find = (snap: ConfigSnapshot, kind: string, name: string) => snap.objects.find((o) => o.kind === kind && o.metadata.name === name);
const portOf = (o: KObject | undefined) => (o?.spec as { ports: { port: number }[] } | undefined)?.ports[0]?.port;

/** A fake server serving every resource but the Gateway API (not installed), and a source on it. */
async function setup(objects: FakeObject[] = [], opts: { gatewayApi?: boolean } = {}) {
  const server = await FakeApiServer.start();
  cleanups.push(() => server.close());
  for (const r of KUBE_RESOURCES) server.serve(r, opts.gatewayApi || !r.apiVersion.startsWith('gateway.networking.k8s.io/'));
  for (const o of objects) server.apply(o);
  const logs: { msg: string; kind?: string; problem?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) });
  const dir = mkdtempSync(join(tmp, 'kc-'));
  const source = new KubeSource(loadKubeConfig({ kubeconfig: server.writeKubeconfig(dir) }), log, {
    debounce: { quietMs: 50, maxDelayMs: 1000 },
    missingRetryMs: 50,
    errorRetryMs: { min: 20, max: 100 },
  });
  cleanups.push(() => source.close());
  const updates: ConfigSnapshot[] = [];
  source.on('update', (s: ConfigSnapshot) => updates.push(s));
  return { server, source, logs, updates };
}

describe('KubeSource', () => {
  it('delivers the initial state once every resource is listed, with apiVersion and kind set', async () => {
    const { server, source, updates } = await setup([namespace('default'), service('web'), pod('web-1'), policy('deny-all')]);
    const snap = await source.start();
    expect(updates).toHaveLength(1);
    expect(snap.problems).toEqual([]);
    expect(snap.objects.map((o) => `${o.apiVersion} ${o.kind} ${o.metadata.name}`).sort()).toEqual([
      'security.istio.io/v1 AuthorizationPolicy deny-all',
      'v1 Namespace default',
      'v1 Pod web-1',
      'v1 Service web',
    ]);
    const watches = () => server.requests.filter((r) => r.query.get('watch') === 'true');
    await until('a watch per served resource', () => new Set(watches().map((r) => r.path)).size === source.status().filter((s) => !s.missing).length);
    expect(watches().every((r) => r.query.get('allowWatchBookmarks') === 'true' && r.query.get('resourceVersion'))).toBe(true);
    expect(server.requests.every((r) => r.authorization === 'Bearer fake-token')).toBe(true);
  });

  it('propagates adds, modifications and deletes after one debounce', async () => {
    const { server, source, updates } = await setup([service('web')]);
    await source.start();
    server.apply(service('api', 9000));
    await until('api added', () => !!find(source.snapshot, 'Service', 'api'));
    server.apply(service('api', 9001));
    await until('api modified', () => portOf(find(source.snapshot, 'Service', 'api')) === 9001);
    server.remove('Service', 'default', 'api');
    await until('api deleted', () => !find(source.snapshot, 'Service', 'api'));
    expect(find(source.snapshot, 'Service', 'web')).toBeDefined();
    expect(source.counters.events).toBe(4); // initial web, api added, modified, deleted
    expect(source.counters.relists).toBe(0);

    // A burst of changes is one push.
    const before = updates.length;
    for (let i = 0; i < 5; i++) server.apply(service(`burst-${i}`));
    await until('burst', () => source.snapshot.objects.length === 6);
    await sleep(150);
    expect(updates.length).toBe(before + 1);
  });

  it('follows bookmarks: the resourceVersion advances without an update, and a reconnect resumes without a relist', async () => {
    const { server, source, updates } = await setup([service('web')]);
    await source.start();
    server.apply(pod('web-1')); // the global resourceVersion moves on; the Service watch sees nothing
    await until('pod', () => !!find(source.snapshot, 'Pod', 'web-1'));
    const rvOf = (kind: string) => source.status().find((s) => s.kind === kind)!.resourceVersion;
    expect(Number(rvOf('Service'))).toBeLessThan(server.resourceVersion);

    const served = source.status().filter((s) => !s.missing).length;
    await until('every watch open', () => server.watching === served);
    const pushes = updates.length;
    server.bookmark();
    await until('bookmark', () => rvOf('Service') === String(server.resourceVersion));
    await sleep(150);
    expect(updates.length).toBe(pushes);

    // History compacted up to now: watches resume from the bookmark, so nothing is relisted.
    const watchesBefore = server.requests.filter((r) => r.path === '/api/v1/services' && r.query.get('watch') === 'true').length;
    server.compact();
    server.dropWatches();
    await until('service watch reopened', () => server.requests.filter((r) => r.path === '/api/v1/services' && r.query.get('watch') === 'true').length > watchesBefore);
    server.apply(service('api'));
    await until('api over the resumed watch', () => !!find(source.snapshot, 'Service', 'api'));
    expect(server.gone).toBe(0);
    expect(source.counters.relists).toBe(0);
  });

  it('relists after 410 Gone and ends in the right state, including a delete missed while the watch was down', async () => {
    const { server, source } = await setup([service('a'), service('b')]);
    await source.start();
    server.refuseWatches = true;
    server.dropWatches();
    server.remove('Service', 'default', 'b');
    server.apply(service('a', 8443));
    server.apply(service('c'));
    server.compact(); // those events are no longer in the history
    await until('a failed watch', () => source.counters.errors > 0);
    server.refuseWatches = false;
    await until('state after relist', () => {
      const s = source.snapshot;
      return !find(s, 'Service', 'b') && portOf(find(s, 'Service', 'a')) === 8443 && !!find(s, 'Service', 'c');
    });
    expect(server.gone).toBeGreaterThan(0);
    expect(source.counters.relists).toBeGreaterThan(0);
    // And the relisted informers watch again.
    server.apply(service('d'));
    await until('d', () => !!find(source.snapshot, 'Service', 'd'));
  });

  it('reports an invalid object by kind, namespace, name and field and keeps the valid ones', async () => {
    const { source } = await setup([service('web'), service('bad', 70000)]);
    const snap = await source.start();
    expect(find(snap, 'Service', 'web')).toBeDefined();
    expect(find(snap, 'Service', 'bad')).toBeUndefined();
    expect(snap.problems).toEqual([
      { file: '/api/v1/namespaces/default/services/bad', object: 'Service default/bad', field: 'spec.ports[0].port', reason: expect.stringContaining('1-65535') as string },
    ]);
  });

  it('keeps the last good version of an object whose edit is invalid, until it is fixed or deleted', async () => {
    const { server, source } = await setup([service('web', 80)]);
    await source.start();
    server.apply(service('web', 70000));
    await until('problem', () => source.snapshot.problems.length === 1);
    expect(portOf(find(source.snapshot, 'Service', 'web'))).toBe(80);
    expect(source.snapshot.problems[0]).toMatchObject({ object: 'Service default/web', field: 'spec.ports[0].port' });

    // Unrelated changes push again; the problem stays reported and the last good version stays.
    server.apply(service('other'));
    await until('other', () => !!find(source.snapshot, 'Service', 'other'));
    expect(source.snapshot.problems).toHaveLength(1);
    expect(portOf(find(source.snapshot, 'Service', 'web'))).toBe(80);

    server.apply(service('web', 8080));
    await until('fixed', () => portOf(find(source.snapshot, 'Service', 'web')) === 8080);
    expect(source.snapshot.problems).toEqual([]);

    server.apply(service('web', 0));
    await until('broken again', () => source.snapshot.problems.length === 1);
    server.remove('Service', 'default', 'web');
    await until('deleted', () => !find(source.snapshot, 'Service', 'web') && source.snapshot.problems.length === 0);
  });

  it('does not let a resource that is not served block the others, and picks it up once installed', async () => {
    const { server, source, logs } = await setup([service('web'), policy('deny-all')]);
    const snap = await source.start();
    expect(find(snap, 'Service', 'web')).toBeDefined();
    expect(find(snap, 'AuthorizationPolicy', 'deny-all')).toBeDefined();
    expect(source.status().filter((s) => s.missing).map((s) => s.kind)).toEqual(['Gateway', 'HTTPRoute', 'GRPCRoute']);

    // Retried, but reported once.
    await until('retries', () => server.requests.filter((r) => r.path === '/apis/gateway.networking.k8s.io/v1/httproutes').length >= 3);
    expect(logs.filter((l) => l.kind === 'HTTPRoute' && /not served/.test(l.msg))).toHaveLength(1);

    server.install('HTTPRoute');
    server.apply(httpRoute('web-route'));
    await until('route', () => !!find(source.snapshot, 'HTTPRoute', 'web-route'));
    expect(find(source.snapshot, 'HTTPRoute', 'web-route')!.apiVersion).toBe('gateway.networking.k8s.io/v1');
    expect(source.status().find((s) => s.kind === 'HTTPRoute')!.missing).toBe(false);
  });

  it('starts once lists succeed even if watches fail, but waits (fail closed) while lists fail, until close()', async () => {
    const { server, source } = await setup([service('web')]);
    server.refuseWatches = true;
    const snap = await source.start();
    expect(find(snap, 'Service', 'web')).toBeDefined();
    await until('watch retried', () => source.counters.errors > KUBE_RESOURCES.length);
    server.refuseWatches = false;
    server.apply(service('api'));
    await until('api', () => !!find(source.snapshot, 'Service', 'api'));

    // A server that is not there at all: start() waits (fail closed) until close().
    const gone = await setup();
    await gone.server.close();
    let finished = false;
    const pending = gone.source.start().then(() => (finished = true));
    await until('errors', () => gone.source.counters.errors >= 3);
    expect(finished).toBe(false);
    gone.source.close();
    await pending;
    expect(gone.updates).toHaveLength(0);
  });
});
