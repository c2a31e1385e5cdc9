// The istio-ca-root-cert publisher against the fake API server (the one part that is a double):
// every namespace gets the mesh root, deletes and edits are undone, namespaces being deleted are
// left alone, conflicts and API errors are retried within bounds, close() leaves nothing behind,
// and the control plane's rendered RBAC allows exactly what the publisher does.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CertificateAuthority } from '../../../src/control/ca/authority.ts';
import { ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY, startRootCertPublisher, type RootCertPublisher, type RootCertPublisherOptions } from '../../../src/control/ca/root-cert-configmap.ts';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';
import { ROOT_CERT_CONFIGMAP as INSTALL_ROOT_CERT_CONFIGMAP } from '../../../src/install/manifests.ts';
import { resolveOptions } from '../../../src/install/options.ts';
import { renderFiles } from '../../../src/install/render.ts';
import { FakeApiServer, type FakeObject, type FakeRequest } from '../config/fake-apiserver.ts';
import { until } from '../../util/until.ts';
import { sleep } from '../../../src/util/sleep.ts';

const tmp = mkdtempSync(join(tmpdir(), 'weft-root-cert-'));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));


const rootOf = async () => (await CertificateAuthority.create({ trustDomain: 'cluster.local', source: { type: 'self-signed' } })).rootPem;
const ROOT = await rootOf();

const namespace = (name: string, phase: 'Active' | 'Terminating' = 'Active'): FakeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name }, status: { phase } });
const configMap = (ns: string, data: Record<string, string>, labels: Record<string, string> = {}): FakeObject => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name: ROOT_CERT_CONFIGMAP, namespace: ns, labels },
  data,
});

type ConfigMapObject = FakeObject & { data?: Record<string, string>; metadata: { labels?: Record<string, string> } };
type Log = { level: number; msg: string; namespace?: string; retryMs?: number; configMap?: string };

async function setup(objects: FakeObject[], opts: RootCertPublisherOptions = {}) {
  const server = await FakeApiServer.start();
  cleanups.push(() => server.close());
  server.serve({ kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces' });
  server.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
  for (const o of objects) server.apply(o);
  const logs: Log[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Log) });
  const kc = loadKubeConfig({ kubeconfig: server.writeKubeconfig(mkdtempSync(join(tmp, 'kc-'))) });
  const start = (pem = ROOT): RootCertPublisher => {
    const p = startRootCertPublisher(kc, pem, log, { retryMs: { min: 10, max: 40 }, watchRetryMs: { min: 10, max: 40 }, maxRetries: 3, ...opts });
    cleanups.push(() => p.close());
    return p;
  };
  const cm = (ns: string) => server.get('ConfigMap', ns, ROOT_CERT_CONFIGMAP) as ConfigMapObject | undefined;
  const published = (ns: string, pem = ROOT) => cm(ns)?.data?.[ROOT_CERT_KEY] === pem && cm(ns)?.metadata.labels?.['istio.io/config'] === 'true';
  const writesTo = (ns: string) => server.requests.filter((r) => r.method !== 'GET' && r.path.startsWith(`/api/v1/namespaces/${ns}/`));
  return { server, logs, start, cm, published, writesTo };
}

describe('istio-ca-root-cert publisher', () => {
  it('publishes the root in every namespace, labelled as Istio does, and skips namespaces being deleted', async () => {
    const { server, start, cm, published, writesTo } = await setup([namespace('default'), namespace('istio-system'), namespace('app'), namespace('doomed', 'Terminating')]);
    const p = start();
    await until('a ConfigMap in every active namespace', () => ['default', 'istio-system', 'app'].every((ns) => published(ns)) && p.counters.created === 3);
    expect(p.synced).toBe(true);
    expect(cm('app')).toMatchObject({ metadata: { name: 'istio-ca-root-cert', namespace: 'app', labels: { 'istio.io/config': 'true' } }, data: { 'root-cert.pem': ROOT } });
    expect(Object.keys(cm('app')!.data!)).toEqual(['root-cert.pem']);
    expect(cm('doomed')).toBeUndefined();
    expect(writesTo('doomed')).toEqual([]);
    expect(p.counters).toMatchObject({ created: 3, updated: 0, errors: 0 });
    // ConfigMaps are listed and watched by name only (what lets RBAC grant list/watch on that name).
    const cmReads = server.requests.filter((r) => r.path === '/api/v1/configmaps');
    expect(cmReads.map((r) => r.query.get('watch') === 'true').sort()).toEqual([false, true]);
    for (const r of cmReads) expect(r.query.get('fieldSelector')).toBe('metadata.name=istio-ca-root-cert');
    expect(server.requests.every((r) => r.authorization === 'Bearer fake-token')).toBe(true);

    // A namespace being deleted: its content goes, and the ConfigMap is not put back. (The marker
    // namespace, on the same watch, shows the publisher has seen the phase change.)
    server.apply(namespace('app', 'Terminating'));
    server.apply(namespace('marker'));
    await until('marker published', () => published('marker'));
    server.remove('ConfigMap', 'app', ROOT_CERT_CONFIGMAP);
    server.remove('ConfigMap', 'default', ROOT_CERT_CONFIGMAP); // seen after app's delete, on the same watch
    await until('default recreated', () => published('default') && p.counters.created === 5);
    await sleep(100);
    expect(cm('app')).toBeUndefined();
    expect(writesTo('app').map((r) => r.method)).toEqual(['POST']); // only the first creation
    server.remove('Namespace', undefined, 'app');
    expect(p.counters).toMatchObject({ created: 5, errors: 0 });
  });

  it('a namespace created later gets the ConfigMap', async () => {
    const { server, start, published } = await setup([namespace('default')]);
    const p = start();
    await until('default published', () => published('default'));
    server.apply(namespace('late'));
    await until('late published', () => published('late') && p.counters.created === 2);
    expect(p.counters.created).toBe(2);
  });

  it('a deleted ConfigMap is recreated, an edited one corrected (other keys and labels kept)', async () => {
    const { server, start, cm, published } = await setup([namespace('default'), namespace('app')]);
    const p = start();
    await until('published', () => published('default') && published('app'));

    server.remove('ConfigMap', 'app', ROOT_CERT_CONFIGMAP);
    await until('app recreated', () => published('app') && p.counters.created === 3);

    server.apply(configMap('app', { [ROOT_CERT_KEY]: 'tampered', 'extra.pem': 'kept' }, { team: 'payments' }));
    await until('app corrected', () => published('app') && p.counters.updated === 1);
    expect(cm('app')!.data).toEqual({ [ROOT_CERT_KEY]: ROOT, 'extra.pem': 'kept' });
    expect(cm('app')!.metadata.labels).toEqual({ team: 'payments', 'istio.io/config': 'true' });

    // Only the label taken away is also put back.
    server.apply(configMap('app', { [ROOT_CERT_KEY]: ROOT }));
    await until('label restored', () => published('app') && p.counters.updated === 2);
    expect(p.counters).toMatchObject({ created: 3, updated: 2, errors: 0 });
    expect(published('default')).toBe(true);
  });

  it('a write conflict re-reads and tries again, and so does a ConfigMap created behind its back', async () => {
    // default holds a stale root; while the publisher corrects it, someone else edits it (409 Conflict).
    // In app, someone creates it just before the publisher does (409 AlreadyExists).
    const { server, start, cm, published } = await setup([namespace('default'), namespace('app'), configMap('default', { [ROOT_CERT_KEY]: 'old root' })]);
    const raced = new Set<string>();
    server.fault = (r: FakeRequest) => {
      if (r.method === 'PUT' && r.path.includes('/namespaces/default/') && !raced.has('default')) {
        raced.add('default');
        server.apply(configMap('default', { [ROOT_CERT_KEY]: 'old root', other: 'theirs' }));
      }
      if (r.method === 'POST' && r.path.includes('/namespaces/app/') && !raced.has('app')) {
        raced.add('app');
        server.apply(configMap('app', { [ROOT_CERT_KEY]: 'somebody else' }));
      }
      return undefined;
    };
    const p = start();
    await until('both published', () => published('default') && published('app'));
    expect(raced).toEqual(new Set(['default', 'app']));
    expect(cm('default')!.data).toEqual({ [ROOT_CERT_KEY]: ROOT, other: 'theirs' }); // their edit kept
    expect(p.counters.conflicts).toBeGreaterThanOrEqual(2);
    expect(p.counters.errors).toBe(0);
    const reads = server.requests.filter((r) => r.method === 'GET' && r.path.endsWith(`/configmaps/${ROOT_CERT_CONFIGMAP}`)).map((r) => r.path);
    expect(reads).toEqual(expect.arrayContaining(['/api/v1/namespaces/default/configmaps/istio-ca-root-cert', '/api/v1/namespaces/app/configmaps/istio-ca-root-cert']));
  });

  it('API errors back off and are retried a bounded number of times, without holding up other namespaces', async () => {
    const { server, logs, start, published, writesTo } = await setup([namespace('default'), namespace('flaky')]);
    let broken = true;
    server.fault = (r) => (broken && r.method === 'POST' && r.path.startsWith('/api/v1/namespaces/flaky/') ? 500 : undefined);
    const p = start();
    await until('flaky given up', () => p.counters.givenUp === 1);
    expect(writesTo('flaky')).toHaveLength(4); // the first attempt and 3 retries
    expect(logs.filter((l) => l.namespace === 'flaky' && l.retryMs !== undefined).map((l) => l.retryMs)).toEqual([10, 20, 40]);
    expect(logs.find((l) => l.level === 50 && l.namespace === 'flaky')?.msg).toMatch(/cannot publish the mesh root certificate/);
    expect(published('default')).toBe(true);

    broken = false;
    server.apply({ ...namespace('flaky'), metadata: { name: 'flaky', labels: { touched: 'yes' } } });
    await until('flaky published on its next change', () => published('flaky'));

    // A lost watch is reopened and what changed meanwhile is caught up.
    server.refuseWatches = true;
    server.dropWatches();
    server.remove('ConfigMap', 'default', ROOT_CERT_CONFIGMAP);
    await until('watch retries', () => p.counters.watchErrors >= 2);
    server.refuseWatches = false;
    await until('default recreated after the watch came back', () => published('default'));
  });

  it('a namespace given up on is tried again at the next resync', async () => {
    const { server, start, published } = await setup([namespace('default'), namespace('flaky')], { maxRetries: 0, resyncMs: 100 });
    let failures = 2;
    server.fault = (r) => (r.method === 'POST' && r.path.startsWith('/api/v1/namespaces/flaky/') && failures-- > 0 ? 500 : undefined);
    const p = start();
    await until('flaky published', () => published('flaky') && p.counters.created === 2, 10_000);
    expect(p.counters).toMatchObject({ errors: 2, givenUp: 2, created: 2 });
  });

  it('update() publishes a new root everywhere', async () => {
    const { start, published } = await setup([namespace('default'), namespace('app')]);
    const p = start();
    await until('published', () => published('default') && published('app'));
    const next = await rootOf();
    p.update(next);
    await until('new root everywhere', () => published('default', next) && published('app', next) && p.counters.updated === 2);
    expect(p.counters.updated).toBe(2);
  });

  it('close() stops watches, retries and requests: nothing more reaches the API server', async () => {
    const { server, start, published } = await setup([namespace('default'), namespace('flaky')], { retryMs: { min: 50, max: 50 }, maxRetries: 100 });
    server.fault = (r) => (r.method === 'POST' && r.path.startsWith('/api/v1/namespaces/flaky/') ? 500 : undefined);
    const p = start();
    await until('published, watching, and retrying flaky', () => published('default') && server.watching === 2 && p.counters.errors >= 2);
    p.close();
    await until('watches closed', () => server.watching === 0);
    const seen = server.requests.length;
    await sleep(200); // four retry intervals
    expect(server.requests.length).toBe(seen);
    expect(p.counters.givenUp).toBe(0); // closing is not giving up
  });

  it('close() leaves no handle behind: a process that closes it exits by itself', () => {
    // A pending 10 s write retry, a 10 s watch back-off and the resync timer would each keep the
    // process alive well past the 5 s it is given after close().
    const script = `
      const { FakeApiServer } = await import(${JSON.stringify(join(import.meta.dirname, '../config/fake-apiserver.ts'))});
      const { startRootCertPublisher } = await import(${JSON.stringify(join(import.meta.dirname, '../../../src/control/ca/root-cert-configmap.ts'))});
      const { loadKubeConfig } = await import(${JSON.stringify(join(import.meta.dirname, '../../../src/control/config/kube-api.ts'))});
      const pino = (await import('pino')).default;
      const server = await FakeApiServer.start();
      server.serve({ kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces' });
      server.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
      for (const name of ['default', 'flaky']) server.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name }, status: { phase: 'Active' } });
      server.fault = (r) => (r.method === 'POST' && r.path.startsWith('/api/v1/namespaces/flaky/') ? 500 : undefined);
      const kc = loadKubeConfig({ kubeconfig: server.writeKubeconfig(${JSON.stringify(mkdtempSync(join(tmp, 'kc-')))}) });
      const p = startRootCertPublisher(kc, 'PEM', pino({ level: 'silent' }), { retryMs: { min: 10000, max: 10000 }, watchRetryMs: { min: 10000, max: 10000 } });
      const deadline = Date.now() + 10000;
      while (!(server.get('ConfigMap', 'default', 'istio-ca-root-cert') && server.watching === 2 && p.counters.errors >= 1)) {
        if (Date.now() > deadline) throw new Error('publisher did not start');
        await new Promise((r) => setTimeout(r, 10));
      }
      p.close();
      await server.close();
      process.stdout.write('closed ' + Date.now() + '\\n');
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '../../..'), encoding: 'utf8', timeout: 30_000 });
    const exited = Date.now();
    expect(child.error, child.stderr).toBeUndefined();
    expect(child.status, child.stderr).toBe(0);
    const closedAt = Number(/closed (\d+)/.exec(child.stdout)?.[1]);
    expect(exited - closedAt, child.stdout).toBeLessThan(5000);
  });

  it("the control plane's rendered RBAC allows every request the publisher makes, and no configmaps verb it does not use", async () => {
    const { server, start, published } = await setup([namespace('default'), namespace('app'), configMap('default', { [ROOT_CERT_KEY]: 'old root' })]);
    let raced = false;
    server.fault = (r) => {
      if (r.method === 'PUT' && !raced) {
        raced = true;
        server.apply(configMap('default', { [ROOT_CERT_KEY]: 'old root', other: 'theirs' })); // one conflict, so one read
      }
      return undefined;
    };
    start();
    await until('published', () => published('default') && published('app'));
    const rules = controlPlaneRules();
    const used = server.requests.map(attributes);
    for (const a of used) expect(allowed(rules, a), JSON.stringify(a)).toBe(true);
    const granted = new Set(rules.filter((r) => r.resources.includes('configmaps')).flatMap((r) => r.verbs));
    expect(new Set(used.filter((a) => a.resource === 'configmaps').map((a) => a.verb))).toEqual(granted);
    expect([...granted].sort()).toEqual(['create', 'get', 'list', 'update', 'watch']);
  });

  it('writes what the agent DaemonSet mounts', () => {
    expect(ROOT_CERT_CONFIGMAP).toBe(INSTALL_ROOT_CERT_CONFIGMAP);
    type Pod = { volumes: { name: string; configMap?: { name: string } }[]; containers: { name: string; args?: string[]; volumeMounts?: { name: string; mountPath: string }[] }[] };
    const ds = renderFiles(resolveOptions())
      .flatMap((f) => f.objects)
      .find((o) => o.kind === 'DaemonSet') as unknown as { spec: { template: { spec: Pod } } };
    const pod = ds.spec.template.spec;
    const volume = pod.volumes.find((v) => v.configMap?.name === ROOT_CERT_CONFIGMAP)!;
    const agent = pod.containers.find((c) => c.name === 'agent')!;
    const mount = agent.volumeMounts!.find((m) => m.name === volume.name)!;
    expect(agent.args!.join(' ')).toContain(`--root-cert ${mount.mountPath}/${ROOT_CERT_KEY}`);
  });
});

// ---- RBAC, as the API server's authorizer sees a request ----------------------------------------

type Rule = { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] };
type Attributes = { verb: string; resource: string; namespace?: string; name?: string };

/** The rules of every ClusterRole bound to the control plane's ServiceAccount. */
function controlPlaneRules(): Rule[] {
  type Obj = { kind: string; metadata?: { name?: string }; rules?: Rule[]; roleRef?: { kind: string; name: string }; subjects?: { kind: string; name: string; namespace?: string }[] };
  const objs = renderFiles(resolveOptions()).flatMap((f) => f.objects) as Obj[];
  const bindings = objs.filter((o) => o.kind === 'ClusterRoleBinding' && o.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === 'weft-control' && s.namespace === 'istio-system'));
  return bindings.flatMap((b) => objs.find((o) => o.kind === 'ClusterRole' && o.metadata?.name === b.roleRef!.name)!.rules!);
}

/** Verb, resource and name as the API server derives them (a list or watch is named by a metadata.name field selector). */
function attributes(r: { method: string; path: string; query: URLSearchParams }): Attributes {
  const m = /^\/api\/v1(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(r.path);
  if (!m) throw new Error(`unexpected request ${r.method} ${r.path}`);
  const [, namespace, resource, name] = m as unknown as [string, string | undefined, string, string | undefined];
  if (r.method === 'POST') return { verb: 'create', resource, namespace };
  if (r.method === 'PUT') return { verb: 'update', resource, namespace, name };
  if (name) return { verb: 'get', resource, namespace, name };
  const byName = /^metadata\.name==?([^,]+)$/.exec(r.query.get('fieldSelector') ?? '')?.[1];
  return { verb: r.query.get('watch') === 'true' ? 'watch' : 'list', resource, namespace, name: byName };
}

function allowed(rules: Rule[], a: Attributes): boolean {
  return rules.some(
    (r) => r.apiGroups.includes('') && r.resources.includes(a.resource) && r.verbs.includes(a.verb) && (!r.resourceNames?.length || (a.name !== undefined && r.resourceNames.includes(a.name))),
  );
}
