// The waypoint reconciler against the fake API server: a waypoint Gateway becomes its
// ServiceAccount, Service and Deployment (owned by it), its status follows the Deployment's ready
// replicas and the Service's address; an invalid Gateway is refused with a reason and gets no
// objects; a changed Gateway changes its objects; a deleted one loses them; a stranger's object of
// the same name is never taken over; other Gateways' objects are never touched; the overlay of a
// parametersRef ConfigMap is merged in, follows the ConfigMap's changes, and a bad one is refused.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';
import { WaypointReconciler } from '../../../src/control/gateway/waypoints.ts';
import type { Condition, GatewayStatus } from '../../../src/kube/waypoint.ts';
import { FakeApiServer, type FakeObject } from '../config/fake-apiserver.ts';
import { until } from '../../util/until.ts';

const tmp = mkdtempSync(join(tmpdir(), 'weft-waypoints-'));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const gateway = (name: string, o: { port?: number; listener?: string; labels?: Record<string, string>; annotations?: Record<string, string>; className?: string; namespace?: string; params?: string } = {}): FakeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace: o.namespace ?? 'apps', ...(o.labels && { labels: o.labels }), ...(o.annotations && { annotations: o.annotations }) },
  spec: {
    gatewayClassName: o.className ?? 'istio-waypoint',
    listeners: [{ name: o.listener ?? 'mesh', port: o.port ?? 15008, protocol: 'HBONE' }],
    ...(o.params && { infrastructure: { parametersRef: { group: '', kind: 'ConfigMap', name: o.params } } }),
  },
});

async function setup(objects: FakeObject[] = []) {
  const server = await FakeApiServer.start();
  cleanups.push(() => server.close());
  server.serve({ kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces' });
  server.serve({ kind: 'Gateway', apiVersion: 'gateway.networking.k8s.io/v1', plural: 'gateways' });
  server.serve({ kind: 'Deployment', apiVersion: 'apps/v1', plural: 'deployments' });
  server.serve({ kind: 'Service', apiVersion: 'v1', plural: 'services' });
  server.serve({ kind: 'ServiceAccount', apiVersion: 'v1', plural: 'serviceaccounts' });
  server.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
  server.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'apps' } });
  for (const o of objects) server.apply(o);
  const kc = loadKubeConfig({ kubeconfig: server.writeKubeconfig(mkdtempSync(join(tmp, 'kc-'))) });
  const r = new WaypointReconciler(kc, pino({ level: 'silent' }), { image: 'weft:test', controlAddress: 'weft-control.istio-system.svc:15012', trustDomain: 'cluster.local', debounceMs: 10, rewatchMs: 50 });
  cleanups.push(() => r.close());
  r.start();
  return { server, r };
}

const statusOf = (server: FakeApiServer, name: string) => server.get('Gateway', 'apps', name)?.status as GatewayStatus | undefined;
const condition = (server: FakeApiServer, name: string, type: string) => statusOf(server, name)?.conditions?.find((c: Condition) => c.type === type);
const owned = (server: FakeApiServer) => ['ServiceAccount', 'Service', 'Deployment'].flatMap((k) => server.list(k).map((o) => `${k}/${o.metadata.namespace}/${o.metadata.name}`)).sort();

/** What the deployment controller does when a pod is ready. */
const markReady = (server: FakeApiServer, name: string) => {
  const d = server.get('Deployment', 'apps', name)!;
  server.apply({ ...d, status: { replicas: 1, readyReplicas: 1 } });
};

describe('waypoint reconciler', () => {
  it('deploys a waypoint Gateway as istiod does and reports Programmed with the Service address once a replica is ready', async () => {
    const { server } = await setup([gateway('waypoint')]);
    await until('owned(server).length === 3', () => owned(server).length === 3);
    expect(owned(server)).toEqual(['Deployment/apps/waypoint', 'Service/apps/waypoint', 'ServiceAccount/apps/waypoint']);
    const gw = server.get('Gateway', 'apps', 'waypoint')!;
    for (const k of ['ServiceAccount', 'Service', 'Deployment']) {
      const o = server.get(k, 'apps', 'waypoint')!;
      expect(o.metadata.ownerReferences).toEqual([{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid: gw.metadata.uid }]);
      expect((o.metadata.labels as Record<string, string>)['gateway.networking.k8s.io/gateway-name']).toBe('waypoint');
    }
    const svc = server.get('Service', 'apps', 'waypoint')!;
    const clusterIP = (svc.spec as { clusterIP: string }).clusterIP;
    expect(clusterIP).toMatch(/^10\.96\./);
    // Accepted at once; not Programmed until a replica is ready.
    await until('condition(server, waypoint, Accepted)?.status === True', () => condition(server, 'waypoint', 'Accepted')?.status === 'True');
    expect(condition(server, 'waypoint', 'Programmed')).toMatchObject({ status: 'False', reason: 'Pending' });
    expect(statusOf(server, 'waypoint')?.addresses).toEqual([{ type: 'IPAddress', value: clusterIP }]);
    markReady(server, 'waypoint');
    await until('condition(server, waypoint, Programmed)?.status === True', () => condition(server, 'waypoint', 'Programmed')?.status === 'True');
    expect(condition(server, 'waypoint', 'Programmed')?.reason).toBe('Programmed');
  });

  // The rule is the shared checkWaypoint (its table is in test/kube/waypoint.test.ts): one case
  // each way shows the reconciler's status follows it.
  it('refuses a Gateway with no HBONE listener on 15008: Accepted=False naming the field, no objects', async () => {
    const { server, r } = await setup([gateway('bad', { port: 80 })]);
    await until('condition(server, bad, Accepted) !== undefined', () => condition(server, 'bad', 'Accepted') !== undefined);
    expect(condition(server, 'bad', 'Accepted')).toMatchObject({ status: 'False', reason: 'ListenersNotValid' });
    expect(condition(server, 'bad', 'Accepted')?.message).toBe('spec.listeners: a waypoint (class istio-waypoint) needs a listener on port 15008 with protocol HBONE (Istio names it mesh)');
    expect(condition(server, 'bad', 'Programmed')).toMatchObject({ status: 'False', reason: 'Invalid' });
    await r.reconcile();
    expect(owned(server)).toEqual([]);
  });

  it('accepts an HBONE listener on 15008 whatever its name, as istiod does', async () => {
    const { server } = await setup([gateway('waypoint', { listener: 'hbone' })]);
    await until('condition(server, waypoint, Accepted)?.status === True', () => condition(server, 'waypoint', 'Accepted')?.status === 'True');
    expect(condition(server, 'waypoint', 'Accepted')?.message).toBe('Resource accepted');
    await until('owned(server).length === 3', () => owned(server).length === 3);
  });

  it('says in Accepted what it ignores: a listener besides the HBONE one (the model reports the same)', async () => {
    const gw = gateway('waypoint');
    (gw.spec as { listeners: unknown[] }).listeners.push({ name: 'http', port: 80, protocol: 'HTTP' });
    const { server } = await setup([gw]);
    await until('condition(server, waypoint, Accepted)?.status === True', () => condition(server, 'waypoint', 'Accepted')?.status === 'True');
    expect(condition(server, 'waypoint', 'Accepted')?.message).toBe("Resource accepted; spec.listeners[1]: weft's waypoint serves only its HBONE listener on 15008: ignored");
  });

  it('refuses an unknown istio.io/waypoint-for and leaves Gateways of other classes alone', async () => {
    const { server, r } = await setup([gateway('odd', { labels: { 'istio.io/waypoint-for': 'everything' } }), gateway('ingress', { className: 'istio' })]);
    await until('condition(server, odd, Accepted) !== undefined', () => condition(server, 'odd', 'Accepted') !== undefined);
    expect(condition(server, 'odd', 'Accepted')).toMatchObject({ status: 'False', reason: 'InvalidParameters' });
    await r.reconcile();
    expect(owned(server)).toEqual([]);
    expect(statusOf(server, 'ingress')).toBeUndefined();
  });

  it('follows changes to the Gateway into its objects, and settles (no writes once converged)', async () => {
    const { server, r } = await setup([gateway('waypoint')]);
    await until('owned(server).length === 3 && condition(server, waypoint, Accepted) !=', () => owned(server).length === 3 && condition(server, 'waypoint', 'Accepted') !== undefined);
    const args = () => ((server.get('Deployment', 'apps', 'waypoint')!.spec as { template: { spec: { containers: { args: string[] }[] } } }).template.spec.containers[0]!.args);
    expect(args()).toContain('service');
    server.apply({ ...server.get('Gateway', 'apps', 'waypoint')!, metadata: { ...server.get('Gateway', 'apps', 'waypoint')!.metadata, labels: { 'istio.io/waypoint-for': 'all' } } });
    await until('args().includes(all)', () => args().includes('all'));
    const ip = (server.get('Service', 'apps', 'waypoint')!.spec as { clusterIP: string }).clusterIP;
    await r.idle();
    // The patch kept what the server assigned.
    expect((server.get('Service', 'apps', 'waypoint')!.spec as { clusterIP: string }).clusterIP).toBe(ip);
    const writes = server.requests.filter((q) => q.method !== 'GET').length;
    await r.reconcile();
    await r.reconcile();
    expect(server.requests.filter((q) => q.method !== 'GET').length).toBe(writes);
  });

  it('repairs an object someone changed', async () => {
    const { server } = await setup([gateway('waypoint')]);
    await until('owned(server).length === 3', () => owned(server).length === 3);
    const svc = server.get('Service', 'apps', 'waypoint')!;
    server.apply({ ...svc, spec: { ...(svc.spec as object), ports: [{ name: 'mesh', port: 9999 }] } });
    await until('(server.get(Service, apps, waypoint)!.spec as { ports: { port: number', () => (server.get('Service', 'apps', 'waypoint')!.spec as { ports: { port: number }[] }).ports.map((p) => p.port).join() === '15021,15008');
  });

  it('deletes the objects when the Gateway goes, and only those', async () => {
    const other: FakeObject = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      // An ingress gateway's deployment: also labelled with its gateway name and owned by a Gateway.
      metadata: { name: 'ingress', namespace: 'apps', labels: { 'gateway.networking.k8s.io/gateway-name': 'ingress', 'gateway.networking.k8s.io/gateway-class-name': 'istio' }, ownerReferences: [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'ingress', uid: 'gone' }] },
      spec: {},
    };
    const { server } = await setup([gateway('waypoint'), other]);
    await until('owned(server).length === 4', () => owned(server).length === 4);
    server.remove('Gateway', 'apps', 'waypoint');
    await until('owned(server).length === 1', () => owned(server).length === 1);
    expect(owned(server)).toEqual(['Deployment/apps/ingress']);
  });

  it("never takes over a stranger's object of the same name; says so in the status", async () => {
    const mine: FakeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'waypoint', namespace: 'apps', labels: { app: 'mine' } }, spec: { ports: [{ port: 80 }] } };
    const { server, r } = await setup([mine, gateway('waypoint')]);
    await until('condition(server, waypoint, Programmed)?.reason === Invalid', () => condition(server, 'waypoint', 'Programmed')?.reason === 'Invalid');
    expect(condition(server, 'waypoint', 'Programmed')?.message).toContain('Service apps/waypoint exists and is not owned by this Gateway');
    await r.reconcile();
    expect(server.get('Service', 'apps', 'waypoint')!.metadata.labels).toEqual({ app: 'mine' });
    expect(server.list('Deployment')).toEqual([]);
  });

  it('runs as the service account istio.io names; for-service-account reaches the waypoint', async () => {
    const { server } = await setup([gateway('sa-waypoint', { annotations: { 'gateway.istio.io/service-account': 'wp-sa', 'istio.io/for-service-account': 'reviews' } })]);
    await until('owned(server).length === 3', () => owned(server).length === 3);
    expect(server.get('ServiceAccount', 'apps', 'wp-sa')).toBeDefined();
    const spec = (server.get('Deployment', 'apps', 'sa-waypoint')!.spec as { template: { spec: { serviceAccountName: string; containers: { args: string[] }[] } } }).template.spec;
    expect(spec.serviceAccountName).toBe('wp-sa');
    expect(spec.containers[0]!.args.join(' ')).toContain('--for-service-account reviews');
  });

  it("uses the user's own service account named by gateway.istio.io/service-account as it is", async () => {
    const sa: FakeObject = { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'shared-sa', namespace: 'apps', labels: { team: 'a' } } };
    const { server, r } = await setup([sa, gateway('waypoint', { annotations: { 'gateway.istio.io/service-account': 'shared-sa' } })]);
    await until('deployment', () => server.get('Deployment', 'apps', 'waypoint') !== undefined);
    await r.idle();
    expect(server.get('ServiceAccount', 'apps', 'shared-sa')!.metadata).toMatchObject({ labels: { team: 'a' } });
    expect(server.get('ServiceAccount', 'apps', 'shared-sa')!.metadata.ownerReferences).toBeUndefined();
    expect(condition(server, 'waypoint', 'Programmed')?.reason).toBe('Pending');
    // The Gateway going does not take the user's service account with it.
    server.remove('Gateway', 'apps', 'waypoint');
    await until('objects removed', () => server.list('Deployment').length === 0);
    expect(server.get('ServiceAccount', 'apps', 'shared-sa')).toBeDefined();
  });

  it('keeps working when the API fails for a while', async () => {
    const { server } = await setup();
    server.fault = (q) => (q.method === 'POST' ? 500 : undefined);
    server.apply(gateway('waypoint'));
    await until('server.requests.some((q) => q.method === POST)', () => server.requests.some((q) => q.method === 'POST'));
    expect(owned(server)).toEqual([]);
    server.fault = undefined;
    await until('owned(server).length === 3, 10_000', () => owned(server).length === 3, 10_000);
  });
  it('merges the parametersRef overlay into the Deployment, follows the ConfigMap as it changes (a watch, not the resync) and refuses a bad or missing one keeping the last good Deployment', async () => {
    const params = (deployment: string, name = 'wp-params'): FakeObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'apps' }, data: { deployment } });
    const jwks = (file: string) => `
spec:
  template:
    spec:
      containers:
      - name: istio-proxy
        env: [{ name: JWKS_CA_CERTS, value: ${file} }]
        volumeMounts: [{ name: jwks-ca, mountPath: /etc/jwks-ca, readOnly: true }]
      volumes: [{ name: jwks-ca, configMap: { name: jwks-ca } }]
`;
    type Spec = { template: { spec: { volumes: { name: string }[]; containers: { args: string[]; env: { name: string; value?: string }[]; volumeMounts: { name: string; mountPath: string }[] }[] } } };
    const pod = () => (server.get('Deployment', 'apps', 'waypoint')?.spec as Spec | undefined)?.template.spec;
    const jwksEnv = () => pod()?.containers[0]!.env.find((e) => e.name === 'JWKS_CA_CERTS')?.value;
    // The ConfigMap missing: InvalidParameters, nothing created.
    const { server, r } = await setup([gateway('waypoint', { params: 'wp-params' })]);
    await until('Accepted is InvalidParameters', () => condition(server, 'waypoint', 'Accepted')?.reason === 'InvalidParameters');
    expect(condition(server, 'waypoint', 'Accepted')).toMatchObject({ status: 'False', message: 'spec.infrastructure.parametersRef: ConfigMap apps/wp-params not found' });
    expect(owned(server)).toEqual([]);
    // The ConfigMap arrives: its watch event schedules the pass (the resync is a minute away; no
    // pass is pending: the status write's own event has been handled).
    await r.idle();
    server.apply(params(jwks('/etc/jwks-ca/ca.pem')));
    await until('the overlay env', () => jwksEnv() === '/etc/jwks-ca/ca.pem');
    expect(pod()!.containers[0]!.volumeMounts).toContainEqual({ name: 'jwks-ca', mountPath: '/etc/jwks-ca', readOnly: true });
    expect(pod()!.volumes.map((v) => v.name)).toContain('jwks-ca');
    expect(pod()!.containers[0]!.args).toContain('--token-file');
    await until('Accepted', () => condition(server, 'waypoint', 'Accepted')?.status === 'True');
    // Changed: re-rendered.
    await r.idle();
    server.apply(params(jwks('/etc/jwks-ca/other.pem')));
    await until('the changed env', () => jwksEnv() === '/etc/jwks-ca/other.pem');
    // An overlay taking the token mount away: refused; the Deployment is the last good one.
    await r.idle();
    const good = JSON.stringify(server.get('Deployment', 'apps', 'waypoint')!.spec);
    server.apply(params('spec: { template: { spec: { volumes: [{ name: istio-token, emptyDir: {} }] } } }'));
    await until('InvalidParameters again', () => condition(server, 'waypoint', 'Accepted')?.reason === 'InvalidParameters');
    expect(condition(server, 'waypoint', 'Accepted')?.message).toMatch(/ConfigMap apps\/wp-params: key deployment: spec\.template\.spec\.volumes\[name=istio-token\]: refused/);
    expect(condition(server, 'waypoint', 'Programmed')).toMatchObject({ status: 'False', reason: 'Invalid' });
    await r.idle();
    expect(JSON.stringify(server.get('Deployment', 'apps', 'waypoint')!.spec)).toBe(good);
    // A ConfigMap no waypoint names does not schedule a pass.
    const passes = r.counters.passes;
    server.apply(params('spec: { replicas: 3 }', 'unrelated'));
    await new Promise((res) => setTimeout(res, 200));
    await r.idle();
    expect(r.counters.passes).toBe(passes);
    // Fixed: accepted, and the overlay's env gone with it (the container list is replaced).
    server.apply(params('spec: { replicas: 2 }'));
    await until('replicas 2', () => (server.get('Deployment', 'apps', 'waypoint')!.spec as { replicas?: number }).replicas === 2);
    await until('Accepted', () => condition(server, 'waypoint', 'Accepted')?.status === 'True');
    expect(jwksEnv()).toBeUndefined();
  });
  it('refuses a parametersRef of another kind as InvalidParameters and creates nothing', async () => {
    const gw = gateway('waypoint');
    (gw.spec as Record<string, unknown>).infrastructure = { parametersRef: { group: 'gateway.envoyproxy.io', kind: 'EnvoyProxy', name: 'p' } };
    const { server, r } = await setup([gw]);
    await until('Accepted is InvalidParameters', () => condition(server, 'waypoint', 'Accepted')?.reason === 'InvalidParameters');
    expect(condition(server, 'waypoint', 'Accepted')?.message).toMatch(/^spec\.infrastructure\.parametersRef: unsupported "gateway\.envoyproxy\.io"\/"EnvoyProxy"/);
    await r.reconcile();
    expect(owned(server)).toEqual([]);
  });
});
