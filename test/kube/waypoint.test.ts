// The waypoint rendering shared by the control plane, the lab and the CLI: what istiod's users see
// (names, labels, ports, probes, the projected istio-ca token), the checks that refuse a Gateway
// with the field named, hostile metadata, and the status conditions.
import { describe, expect, it } from 'vitest';
import {
  checkWaypoint,
  renderWaypoint,
  waypointArgs,
  waypointGateway,
  waypointStatus,
  type GatewayObject,
  type Waypoint,
} from '../../src/kube/waypoint.ts';

const gw = (over: Partial<GatewayObject['metadata']> = {}, spec: Record<string, unknown> = {}): GatewayObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'waypoint', namespace: 'apps', uid: 'u-1', ...over },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }], ...spec },
});
const ok = (g: GatewayObject): Waypoint => {
  const r = checkWaypoint(g);
  if ('problem' in r) throw new Error(r.problem.message);
  return r.waypoint;
};
const problem = (g: GatewayObject) => {
  const r = checkWaypoint(g);
  if (!('problem' in r)) throw new Error('accepted');
  return r.problem;
};
const opts = { image: 'weft:1', controlAddress: 'weft-control.istio-system.svc:15012', trustDomain: 'cluster.local' };

describe('checkWaypoint', () => {
  it('accepts istioctl waypoint apply output; defaults: for service, runs as its own name', () => {
    expect(ok(gw())).toEqual({ name: 'waypoint', namespace: 'apps', uid: 'u-1', for: 'service', serviceAccount: 'waypoint', infrastructure: { labels: {}, annotations: {} } });
    expect(ok(gw({ labels: { 'istio.io/waypoint-for': 'all' }, annotations: { 'istio.io/for-service-account': 'reviews' } }))).toMatchObject({ for: 'all', forServiceAccount: 'reviews', serviceAccount: 'waypoint' });
  });

  it.each([
    [{}, { listeners: [] }, 'spec.listeners'],
    [{}, { listeners: 'mesh' }, 'spec.listeners'],
    [{}, { listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }, { name: 'http', port: 80, protocol: 'HTTP' }] }, 'spec.listeners'],
    [{}, { listeners: [null] }, 'spec.listeners[0]'],
    [{}, { listeners: [{ name: 'proxy', port: 15008, protocol: 'HBONE' }] }, 'spec.listeners[0].name'],
    [{}, { listeners: [{ name: 'mesh', port: 80, protocol: 'HBONE' }] }, 'spec.listeners[0].port'],
    [{}, { listeners: [{ name: 'mesh', port: '15008', protocol: 'HBONE' }] }, 'spec.listeners[0].port'],
    [{}, { listeners: [{ name: 'mesh', port: 15008, protocol: 'TCP' }] }, 'spec.listeners[0].protocol'],
    [{ name: 'Waypoint' }, {}, 'metadata.name'],
    [{ name: '1waypoint' }, {}, 'metadata.name'],
    [{ name: 'a'.repeat(64) }, {}, 'metadata.name'],
    [{ name: '../../etc' }, {}, 'metadata.name'],
    [{ namespace: 'a/b' }, {}, 'metadata.namespace'],
    [{ labels: { 'istio.io/waypoint-for': 'ingress' } }, {}, 'metadata.labels["istio.io/waypoint-for"]'],
    [{ labels: { x: 1 as unknown as string } }, {}, 'metadata'],
    [{ annotations: { 'istio.io/for-service-account': 'a b' } }, {}, 'metadata.annotations["istio.io/for-service-account"]'],
    [{ annotations: { 'gateway.istio.io/service-account': '' } }, {}, 'metadata.annotations["gateway.istio.io/service-account"]'],
    [{}, { infrastructure: { labels: { a: {} } } }, 'spec.infrastructure'],
  ])('refuses %j %j at %s', (meta, spec, field) => {
    expect(problem(gw(meta as Partial<GatewayObject['metadata']>, spec)).field).toBe(field);
  });

  it('a listener problem is ListenersNotValid, the rest InvalidParameters', () => {
    expect(problem(gw({}, { listeners: [{ name: 'mesh', port: 80, protocol: 'HBONE' }] })).reason).toBe('ListenersNotValid');
    expect(problem(gw({ name: 'X' })).reason).toBe('InvalidParameters');
  });
});

describe('renderWaypoint', () => {
  const r = renderWaypoint(ok(gw({ labels: { 'istio.io/waypoint-for': 'workload' } }, { infrastructure: { labels: { team: 'a' }, annotations: { note: 'x', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } } })), opts);
  const pod = (r.deployment.spec as { template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: Record<string, unknown> & { containers: Record<string, unknown>[]; volumes: Record<string, unknown>[] } } }).template;
  const c = pod.spec.containers[0] as { name: string; args: string[]; ports: { name: string; containerPort: number }[]; readinessProbe: { httpGet: { path: string; port: number } }; volumeMounts: { name: string; mountPath: string }[] };

  it('names all three after the Gateway, labels them as istiod does, owned by the Gateway', () => {
    for (const o of [r.serviceAccount, r.deployment, r.service]) {
      expect(o.metadata).toMatchObject({ name: 'waypoint', namespace: 'apps', ownerReferences: [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid: 'u-1' }] });
      expect(o.metadata.labels).toMatchObject({ 'gateway.networking.k8s.io/gateway-name': 'waypoint', 'gateway.networking.k8s.io/gateway-class-name': 'istio-waypoint', team: 'a' });
      expect(o.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration']).toBeUndefined();
    }
    expect(r.deployment.metadata.labels['gateway.istio.io/managed']).toBe('istio.io-mesh-controller');
    expect(r.deployment.metadata.annotations).toEqual({ note: 'x' });
  });

  it('the pods opt out of capture, run as the service account, with the istio-ca token and no API token', () => {
    expect(pod.metadata.labels).toMatchObject({ 'istio.io/dataplane-mode': 'none', 'sidecar.istio.io/inject': 'false', 'gateway.networking.k8s.io/gateway-name': 'waypoint', 'service.istio.io/canonical-name': 'waypoint' });
    expect((r.deployment.spec as { selector: unknown }).selector).toEqual({ matchLabels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } });
    expect(pod.spec.serviceAccountName).toBe('waypoint');
    expect(pod.spec.automountServiceAccountToken).toBe(false);
    expect(pod.spec.volumes).toContainEqual({ name: 'istio-token', projected: { sources: [{ serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } }] } });
    expect(pod.spec.volumes).toContainEqual({ name: 'istiod-ca-cert', configMap: { name: 'istio-ca-root-cert' } });
    expect(c.volumeMounts.map((m) => m.mountPath)).toEqual(expect.arrayContaining(['/var/run/secrets/tokens', '/var/run/secrets/istio']));
  });

  it('runs weft waypoint with the control plane, CA, token and what it serves; ready on 15021', () => {
    expect(c.name).toBe('istio-proxy');
    expect(c.args.slice(0, 2)).toEqual(['waypoint', 'run']);
    const flag = (f: string) => c.args[c.args.indexOf(f) + 1];
    expect(flag('--control-address')).toBe('weft-control.istio-system.svc:15012');
    expect(flag('--ca-address')).toBe('weft-control.istio-system.svc:15012');
    expect(flag('--token-file')).toBe('/var/run/secrets/tokens/istio-token');
    expect(flag('--waypoint-for')).toBe('workload');
    expect(c.args).not.toContain('--for-service-account');
    expect(c.readinessProbe.httpGet).toMatchObject({ path: '/healthz/ready', port: 15021 });
    expect(c.ports.map((p) => [p.name, p.containerPort])).toEqual([['mesh', 15008], ['metrics', 15020], ['status-port', 15021]]);
    expect(pod.metadata.annotations).toMatchObject({ 'prometheus.io/port': '15020', 'prometheus.io/scrape': 'true' });
    expect(waypointArgs(ok(gw({ annotations: { 'istio.io/for-service-account': 'reviews' } })), { ...opts, caAddress: 'ca:15012' }).join(' ')).toContain('--ca-address ca:15012 --token-file');
  });

  it('the Service exposes status-port 15021 and mesh 15008 (appProtocol hbone), selecting the pods', () => {
    expect(r.service.spec).toMatchObject({
      type: 'ClusterIP',
      selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
      ports: [
        { name: 'status-port', port: 15021, protocol: 'TCP', appProtocol: 'tcp' },
        { name: 'mesh', port: 15008, protocol: 'TCP', appProtocol: 'hbone' },
      ],
    });
  });

  it('without a uid (a Gateway not stored yet) there is no owner reference', () => {
    expect(renderWaypoint(ok(gw({ uid: undefined })), opts).deployment.metadata.ownerReferences).toBeUndefined();
  });
});

describe('waypointStatus', () => {
  const t0 = new Date('2026-01-01T00:00:00Z');
  const t1 = new Date('2026-01-01T00:01:00Z');
  it('Accepted/Programmed and the address; a condition that did not change keeps its transition time', () => {
    const pending = waypointStatus(gw({ generation: 3 }), { readyReplicas: 0, address: '10.96.0.9' }, t0);
    expect(pending.conditions).toEqual([
      { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Resource accepted', lastTransitionTime: '2026-01-01T00:00:00Z', observedGeneration: 3 },
      { type: 'Programmed', status: 'False', reason: 'Pending', message: 'Deployment has no ready replica yet', lastTransitionTime: '2026-01-01T00:00:00Z', observedGeneration: 3 },
    ]);
    expect(pending.addresses).toEqual([{ type: 'IPAddress', value: '10.96.0.9' }]);
    const ready = waypointStatus({ ...gw({ generation: 3 }), status: pending }, { readyReplicas: 1, address: '10.96.0.9' }, t1);
    expect(ready.conditions?.map((c) => [c.type, c.status, c.lastTransitionTime])).toEqual([
      ['Accepted', 'True', '2026-01-01T00:00:00Z'],
      ['Programmed', 'True', '2026-01-01T00:01:00Z'],
    ]);
    expect(waypointStatus({ ...gw({ generation: 3 }), status: ready }, { readyReplicas: 1, address: '10.96.0.9' }, new Date())).toEqual(ready);
  });

  it('no address yet: not Programmed; a problem: Accepted=False with the field', () => {
    expect(waypointStatus(gw(), { readyReplicas: 1 }).conditions?.[1]).toMatchObject({ status: 'False', reason: 'AddressNotAssigned' });
    const s = waypointStatus(gw(), { problem: { reason: 'ListenersNotValid', field: 'spec.listeners[0].port', message: 'no' } });
    expect(s.conditions?.[0]).toMatchObject({ type: 'Accepted', status: 'False', reason: 'ListenersNotValid', message: 'spec.listeners[0].port: no' });
    expect(s.addresses).toBeUndefined();
  });
});

describe('waypointGateway', () => {
  it('writes what istioctl waypoint generate writes, and checks it', () => {
    expect(waypointGateway({ name: 'waypoint', namespace: 'apps' })).toEqual({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'apps' },
      spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    });
    expect(waypointGateway({ name: 'w', namespace: 'apps', for: 'workload', forServiceAccount: 'reviews' }).metadata).toEqual({
      name: 'w',
      namespace: 'apps',
      labels: { 'istio.io/waypoint-for': 'workload' },
      annotations: { 'istio.io/for-service-account': 'reviews' },
    });
    expect(() => waypointGateway({ name: 'Bad', namespace: 'apps' })).toThrow(/waypoint apps\/Bad: metadata.name/);
    expect(() => waypointGateway({ name: 'w', namespace: 'apps', for: 'x' as 'all' })).toThrow(/istio.io\/waypoint-for/);
  });
});
