import { describe, expect, it } from 'vitest';
import type { KObject, Pod, Service } from '../../../src/kube/objects.ts';
import { reconcileWaypoints, updateWaypointStatus } from '../../../src/lab/controllers/waypoints.ts';
import { ObjectStore } from '../../../src/lab/store.ts';
import { validateObject } from '../../../src/kube/manifest.ts';

const OPTS = { image: 'weft', controlAddress: '172.18.0.1:15012', trustDomain: 'cluster.local' };
const gateway = (name = 'waypoint', extra: Record<string, unknown> = {}): KObject =>
  ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: 'default' },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }], ...extra },
  }) as KObject;

function setup() {
  const store = new ObjectStore();
  store.seed();
  return { store, sync: () => reconcileWaypoints(store, OPTS), kinds: () => [...store.values()].filter((o) => o.metadata.namespace === 'default').map((o) => `${o.kind}/${o.metadata.name}`).sort() };
}

describe('the lab waypoint controller', () => {
  it('renders a waypoint Gateway into its ServiceAccount, Deployment and Service, owned by it, and leaves them alone when nothing changed', () => {
    const t = setup();
    t.store.apply([gateway()], () => true);
    t.sync();
    expect(t.kinds()).toEqual(['Deployment/waypoint', 'Gateway/waypoint', 'Service/waypoint', 'ServiceAccount/waypoint']);
    const d = t.store.get('Deployment/default/waypoint')!;
    const uid = t.store.get('Gateway/default/waypoint')!.metadata.uid;
    expect(d.metadata.ownerReferences).toEqual([{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid }]);
    // The container runs weft's own image with the flags the Kubernetes reconciler would give it.
    const c = (d.spec as { template: { spec: Pod['spec'] } }).template.spec.containers[0]!;
    expect(c.image).toBe('weft');
    expect(c.args).toEqual(expect.arrayContaining(['waypoint', 'run', '--control-address', '172.18.0.1:15012']));
    // What the lab renders passes the lab's own checks for pods (volumes included).
    expect(validateObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: (d.spec as { template: { spec: unknown } }).template.spec })).not.toHaveProperty('problem');
    const before = d;
    t.sync();
    expect(t.store.get('Deployment/default/waypoint')).toBe(before);
  });

  it('collects what a deleted Gateway owned, never takes over an object it does not own, and refuses an invalid Gateway', () => {
    const t = setup();
    t.store.apply([{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'mine', namespace: 'default' }, spec: { ports: [{ port: 80 }] } } as KObject], () => true);
    t.store.apply([gateway(), gateway('mine'), gateway('bad', { listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] })], () => true);
    const conflicts = t.sync();
    expect(t.store.get('Service/default/mine')!.metadata.ownerReferences).toBeUndefined();
    expect([...conflicts.values()]).toEqual(['Service default/mine exists and is not owned by this Gateway']);
    expect(t.store.get('Deployment/default/bad')).toBeUndefined();
    updateWaypointStatus(t.store, [], () => undefined, conflicts);
    const status = (name: string) => (t.store.get(`Gateway/default/${name}`)!.status as { conditions: { type: string; status: string; reason: string }[] }).conditions;
    expect(status('bad')[0]).toMatchObject({ type: 'Accepted', status: 'False', reason: 'ListenersNotValid' });
    expect(status('mine')[1]).toMatchObject({ type: 'Programmed', status: 'False', reason: 'Invalid' });
    expect(status('waypoint')[1]).toMatchObject({ type: 'Programmed', status: 'False' });
    t.store.delete([{ kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'default' } }]);
    t.sync();
    expect(t.kinds().filter((k) => k.endsWith('/waypoint'))).toEqual([]);
    expect(t.store.get('Service/default/mine')).toBeDefined();
  });

  it('says Programmed once a replica is ready and the Service has its address, and writes a status only when it changes', () => {
    const t = setup();
    t.store.apply([gateway()], () => true);
    t.sync();
    const d = t.store.get('Deployment/default/waypoint')!;
    const pod = { kind: 'Pod', metadata: { name: 'w-1', namespace: 'default', ownerReferences: [{ kind: 'Deployment', uid: d.metadata.uid }] }, status: { conditions: [{ type: 'Ready', status: 'True' }] } } as unknown as Pod;
    expect(updateWaypointStatus(t.store, [pod], (s: Service) => (s.metadata.name === 'waypoint' ? '10.96.0.9' : undefined), new Map())).toBe(true);
    const gw = t.store.get('Gateway/default/waypoint')!;
    expect(gw.status).toMatchObject({ addresses: [{ type: 'IPAddress', value: '10.96.0.9' }] });
    expect((gw.status as { conditions: { type: string; status: string }[] }).conditions[1]).toMatchObject({ type: 'Programmed', status: 'True' });
    expect(updateWaypointStatus(t.store, [pod], () => '10.96.0.9', new Map())).toBe(false);
  });
  it('overlays the Deployment from the parametersRef ConfigMap, re-renders when it changes, and refuses a bad or missing one as InvalidParameters keeping the last good Deployment', () => {
    const t = setup();
    const params = (deployment: string): KObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'wp-params', namespace: 'default' }, data: { deployment } }) as unknown as KObject;
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
    const proxy = () => {
      const spec = (t.store.get('Deployment/default/waypoint')!.spec as { template: { spec: Pod['spec'] } }).template.spec;
      return { spec, c: spec.containers[0]! };
    };
    const accepted = () => (t.store.get('Gateway/default/waypoint')!.status as { conditions: { type: string; status: string; reason: string; message: string }[] }).conditions[0]!;
    const status = () => updateWaypointStatus(t.store, [], () => undefined, new Map());
    // The Gateway first, its ConfigMap missing: not accepted, nothing deployed.
    t.store.apply([gateway('waypoint', { infrastructure: { parametersRef: { group: '', kind: 'ConfigMap', name: 'wp-params' } } })], () => true);
    t.sync();
    expect(t.store.get('Deployment/default/waypoint')).toBeUndefined();
    status();
    expect(accepted()).toMatchObject({ status: 'False', reason: 'InvalidParameters', message: 'spec.infrastructure.parametersRef: ConfigMap default/wp-params not found' });
    // The ConfigMap arrives: deployed with the env var and the mount; accepted.
    t.store.apply([params(jwks('/etc/jwks-ca/ca.pem'))], () => true);
    t.sync();
    expect(proxy().c.env).toContainEqual({ name: 'JWKS_CA_CERTS', value: '/etc/jwks-ca/ca.pem' });
    expect(proxy().c.volumeMounts).toContainEqual({ name: 'jwks-ca', mountPath: '/etc/jwks-ca', readOnly: true });
    // What the lab runs passes its own pod checks (the configMap volume is one the lab provides).
    expect(validateObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: proxy().spec })).not.toHaveProperty('problem');
    status();
    expect(accepted()).toMatchObject({ status: 'True', reason: 'Accepted' });
    // A changed ConfigMap re-renders the Deployment.
    t.store.apply([params(jwks('/etc/jwks-ca/other.pem'))], () => true);
    t.sync();
    expect(proxy().c.env).toContainEqual({ name: 'JWKS_CA_CERTS', value: '/etc/jwks-ca/other.pem' });
    // An overlay that would drop weft's args: refused, and the running Deployment is the last good one.
    const good = t.store.get('Deployment/default/waypoint');
    t.store.apply([params('spec: { template: { spec: { containers: [{ name: istio-proxy, args: [sh] }] } } }')], () => true);
    t.sync();
    expect(t.store.get('Deployment/default/waypoint')).toBe(good);
    status();
    expect(accepted()).toMatchObject({ status: 'False', reason: 'InvalidParameters' });
    expect(accepted().message).toMatch(/ConfigMap default\/wp-params: key deployment: spec\.template\.spec\.containers\[0\]\.args: refused/);
    // YAML that does not parse: the same.
    t.store.apply([params('spec: [')], () => true);
    t.sync();
    status();
    expect(accepted().message).toMatch(/not valid YAML/);
    // What Kubernetes would run but the lab cannot provide is said, not run without it.
    t.store.apply([params('spec: { template: { spec: { volumes: [{ name: s, secret: { secretName: jwks } }], containers: [{ name: istio-proxy, volumeMounts: [{ name: s, mountPath: /etc/s }] }] } } }')], () => true);
    t.sync();
    status();
    expect(accepted()).toMatchObject({ status: 'False', reason: 'InvalidParameters' });
    expect(accepted().message).toMatch(/the lab cannot run the overlay: .*volumes\[3\]/);
    // Fixed: accepted again, and the overlay's env is gone once the ConfigMap no longer sets it.
    t.store.apply([params('metadata: { labels: { team: auth } }')], () => true);
    t.sync();
    status();
    expect(accepted().status).toBe('True');
    expect(proxy().c.env?.some((e) => e.name === 'JWKS_CA_CERTS')).toBe(false);
    expect(t.store.get('Deployment/default/waypoint')!.metadata.labels).toMatchObject({ team: 'auth' });
  });
});
