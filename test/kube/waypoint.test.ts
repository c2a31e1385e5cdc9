// The waypoint rendering shared by the control plane, the lab and the CLI: what istiod's users see
// (names, labels, ports, probes, the projected istio-ca token), the checks that refuse a Gateway
// with the field named, hostile metadata, and the status conditions.
import { describe, expect, it } from 'vitest';
import {
  checkWaypoint,
  memoryBytes,
  renderWaypoint,
  waypointArgs,
  waypointGateway,
  waypointNodeOptions,
  waypointParameters,
  waypointStatus,
  parametersConfigMap,
  type GatewayObject,
  type Waypoint,
  WAYPOINT_DRAIN_DEADLINE_S,
  WAYPOINT_TERMINATION_GRACE_S,
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

// The one rule for a waypoint Gateway: the reconciler's status (test/control/gateway) and the mesh
// model's problems (test/control/model/networking/waypoints.test.ts) both come from it, so every
// case is asserted here once. As istiod: the waypoint is the listener on 15008 with protocol HBONE,
// whatever its name; other listeners are allowed (weft notes them as ignored).
describe('checkWaypoint', () => {
  const listener = (o: Record<string, unknown> = {}) => ({ name: 'mesh', port: 15008, protocol: 'HBONE', ...o });
  const ignored = (g: GatewayObject) => {
    const r = checkWaypoint(g);
    if ('problem' in r) throw new Error(r.problem.message);
    return r.ignored;
  };

  it('accepts istioctl waypoint apply output; defaults: for service, runs as its own name, used by its own namespace', () => {
    expect(ok(gw())).toEqual({ name: 'waypoint', namespace: 'apps', uid: 'u-1', for: 'service', serviceAccount: 'waypoint', from: { same: true }, infrastructure: { labels: {}, annotations: {} } });
    expect(ignored(gw())).toEqual([]);
    expect(ok(gw({ labels: { 'istio.io/waypoint-for': 'all' }, annotations: { 'istio.io/for-service-account': 'reviews' } }))).toMatchObject({ for: 'all', forServiceAccount: 'reviews', serviceAccount: 'waypoint' });
    expect(ok({ ...gw(), apiVersion: 'gateway.networking.k8s.io/v1beta1' }).name).toBe('waypoint');
  });

  it('the HBONE listener on 15008 is the waypoint whatever its name; other listeners are kept but ignored', () => {
    expect(ignored(gw({}, { listeners: [listener({ name: 'hbone' })] }))).toEqual([]);
    const extra = gw({}, { listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }, listener({ name: 'tunnel' }), { name: 'http', port: 80, protocol: 'HTTP' }] });
    expect(ok(extra).name).toBe('waypoint');
    expect(ignored(extra).map((n) => n.field)).toEqual(['spec.listeners[0]', 'spec.listeners[2]']);
    // A second HBONE listener on 15008 is not the waypoint's: the first one is.
    expect(ignored(gw({}, { listeners: [listener(), listener({ name: 'again', allowedRoutes: { namespaces: { from: 'All' } } })] })).map((n) => n.field)).toEqual(['spec.listeners[1]']);
  });

  it("reads who may use it from the HBONE listener's allowedRoutes.namespaces", () => {
    const from = (namespaces: unknown) => ok(gw({}, { listeners: [{ name: 'http', port: 80, protocol: 'HTTP', allowedRoutes: { namespaces: { from: 'All' } } }, listener({ allowedRoutes: { namespaces } })] })).from;
    expect(from(undefined)).toEqual({ same: true });
    expect(from({ from: 'Same' })).toEqual({ same: true });
    expect(from({ from: 'All' })).toEqual({ all: true });
    expect(from({ from: 'Selector', selector: { matchLabels: { mesh: 'yes' } } })).toEqual({ matchLabels: { mesh: 'yes' } });
    // A selector weft cannot evaluate admits only the waypoint's own namespace, and says so.
    const exprs = gw({}, { listeners: [listener({ allowedRoutes: { namespaces: { from: 'Selector', selector: { matchExpressions: [{ key: 'a', operator: 'Exists' }] } } } })] });
    expect(ok(exprs).from).toEqual({ same: true });
    expect(ignored(exprs)).toEqual([{ field: 'spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions', message: "not supported by weft: only the waypoint's own namespace may use it" }]);
  });

  it.each([
    [{}, { listeners: [] }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: undefined }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: 'mesh' }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: [null] }, 'spec.listeners[0]', 'ListenersNotValid'],
    [{}, { listeners: [listener(), 7] }, 'spec.listeners[1]', 'ListenersNotValid'],
    [{}, { listeners: [listener({ port: 80 })] }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: [listener({ port: '15008' })] }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: [listener({ protocol: 'TCP' })] }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: [listener({ protocol: 'hbone' })] }, 'spec.listeners', 'ListenersNotValid'],
    [{}, { listeners: [listener({ allowedRoutes: 'x' })] }, 'spec.listeners[0].allowedRoutes', 'ListenersNotValid'],
    [{}, { listeners: [listener({ allowedRoutes: { namespaces: [] } })] }, 'spec.listeners[0].allowedRoutes.namespaces', 'ListenersNotValid'],
    [{}, { listeners: [listener({ allowedRoutes: { namespaces: { from: 'Everyone' } } })] }, 'spec.listeners[0].allowedRoutes.namespaces.from', 'ListenersNotValid'],
    [{}, { listeners: [listener({ allowedRoutes: { namespaces: { from: 'Selector', selector: 'x' } } })] }, 'spec.listeners[0].allowedRoutes.namespaces.selector', 'ListenersNotValid'],
    [{}, { listeners: [listener({ allowedRoutes: { namespaces: { from: 'Selector', selector: { matchLabels: { a: 1 } } } } })] }, 'spec.listeners[0].allowedRoutes.namespaces.selector.matchLabels', 'ListenersNotValid'],
    [{ name: 'Waypoint' }, {}, 'metadata.name', 'InvalidParameters'],
    [{ name: '1waypoint' }, {}, 'metadata.name', 'InvalidParameters'],
    [{ name: 'a'.repeat(64) }, {}, 'metadata.name', 'InvalidParameters'],
    [{ name: '../../etc' }, {}, 'metadata.name', 'InvalidParameters'],
    [{ namespace: 'a/b' }, {}, 'metadata.namespace', 'InvalidParameters'],
    [{ labels: { 'istio.io/waypoint-for': 'ingress' } }, {}, 'metadata.labels["istio.io/waypoint-for"]', 'InvalidParameters'],
    [{ labels: { x: 1 as unknown as string } }, {}, 'metadata', 'InvalidParameters'],
    [{ annotations: { 'istio.io/for-service-account': 'a b' } }, {}, 'metadata.annotations["istio.io/for-service-account"]', 'InvalidParameters'],
    [{ annotations: { 'istio.io/for-service-account': '' } }, {}, 'metadata.annotations["istio.io/for-service-account"]', 'InvalidParameters'],
    [{ annotations: { 'istio.io/for-service-account': 'Not/Valid' } }, {}, 'metadata.annotations["istio.io/for-service-account"]', 'InvalidParameters'],
    [{ annotations: { 'gateway.istio.io/service-account': '' } }, {}, 'metadata.annotations["gateway.istio.io/service-account"]', 'InvalidParameters'],
    [{}, { infrastructure: { labels: { a: {} } } }, 'spec.infrastructure', 'InvalidParameters'],
    [{}, { infrastructure: 'x' }, 'spec.infrastructure', 'InvalidParameters'],
  ])('refuses %j %j at %s (%s)', (meta, spec, field, reason) => {
    expect(problem(gw(meta as Partial<GatewayObject['metadata']>, spec))).toMatchObject({ field, reason });
  });

  it('refuses a version istiod does not read', () => {
    expect(problem({ ...gw(), apiVersion: 'gateway.networking.k8s.io/v0' })).toEqual({ reason: 'InvalidParameters', field: 'apiVersion', message: 'unsupported version "gateway.networking.k8s.io/v0" (gateway.networking.k8s.io/v1 or v1beta1)' });
  });

  it('messages name what is wanted', () => {
    expect(problem(gw({}, { listeners: [{ name: 'mesh', port: 15009, protocol: 'HBONE' }] })).message).toBe('a waypoint (class istio-waypoint) needs a listener on port 15008 with protocol HBONE (Istio names it mesh)');
    expect(problem(gw({ labels: { 'istio.io/waypoint-for': 'services' } })).message).toBe('unknown value "services" (service, workload, all, none)');
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
    expect(c.args).not.toContain('--jwks-ca');
  });

  it('gives the pod a grace period comfortably above the waypoint\'s drain deadline (the process default, not passed)', async () => {
    const { DEFAULT_DRAIN_DEADLINE_S } = await import('../../src/waypoint/main.ts');
    expect(WAYPOINT_DRAIN_DEADLINE_S).toBe(DEFAULT_DRAIN_DEADLINE_S);
    expect(pod.spec.terminationGracePeriodSeconds).toBe(WAYPOINT_TERMINATION_GRACE_S);
    expect(WAYPOINT_TERMINATION_GRACE_S).toBeGreaterThanOrEqual(WAYPOINT_DRAIN_DEADLINE_S + 10);
    expect(c.args).not.toContain('--drain-deadline');
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

  it("bounds V8's heap by the container's memory limit (NODE_OPTIONS): 4 MB semi-spaces, old space half the limit; glibc returns freed buffers", () => {
    const env = (x: typeof r) => ((x.deployment.spec as { template: typeof pod }).template.spec.containers[0] as { env: { name: string; value?: string }[] }).env;
    expect(env(r)).toContainEqual({ name: 'NODE_OPTIONS', value: '--max-semi-space-size=4 --max-old-space-size=512' });
    expect(env(r)).toContainEqual({ name: 'GLIBC_TUNABLES', value: 'glibc.malloc.mmap_threshold=131072' });
    const big = renderWaypoint(ok(gw()), { ...opts, resources: { limits: { memory: '4Gi' } } });
    expect(env(big)).toContainEqual({ name: 'NODE_OPTIONS', value: '--max-semi-space-size=4 --max-old-space-size=2048' });
    // No limit (or one not understood): V8's own old-space limit, never a guess.
    expect(waypointNodeOptions({ requests: { memory: '128Mi' } })).toBe('--max-semi-space-size=4');
    expect(waypointNodeOptions({ limits: { memory: 'lots' } })).toBe('--max-semi-space-size=4');
    // A tiny limit still leaves V8 a heap it can start with.
    expect(waypointNodeOptions({ limits: { memory: '64Mi' } })).toBe('--max-semi-space-size=4 --max-old-space-size=64');
    expect([memoryBytes('1Gi'), memoryBytes('512Mi'), memoryBytes('1G'), memoryBytes('1.5Gi'), memoryBytes('100'), memoryBytes('1e3'), memoryBytes('-1Gi')]).toEqual([2 ** 30, 2 ** 29, 1e9, 1.5 * 2 ** 30, 100, undefined, undefined]);
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
    expect(waypointStatus(gw(), { readyReplicas: 1, ignored: [{ field: 'spec.listeners[1]', message: 'ignored' }, { field: 'x', message: 'y' }] }).conditions?.[0]).toMatchObject({ status: 'True', reason: 'Accepted', message: 'Resource accepted; spec.listeners[1]: ignored; x: y' });
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

// spec.infrastructure.parametersRef: a ConfigMap whose `deployment` key overlays the Deployment,
// in weft's narrow subset; everything else, and anything that would undo what weft relies on, is
// refused as InvalidParameters with the ConfigMap and the field named.
describe('waypoint parameters (parametersRef)', () => {
  const ref = { group: '', kind: 'ConfigMap', name: 'waypoint-params' };
  const withRef = (r: unknown = ref) => gw({}, { infrastructure: { parametersRef: r } });
  const cm = (deployment: string, extra: Record<string, string> = {}) => ({ data: { deployment, ...extra } });
  const params = (deployment: string | undefined, extra: Record<string, string> = {}) => {
    const w = ok(withRef());
    return waypointParameters(w, deployment === undefined ? undefined : cm(deployment, extra));
  };
  const refused = (deployment: string, extra: Record<string, string> = {}) => {
    const r = params(deployment, extra);
    if (!('problem' in r)) throw new Error('accepted');
    expect(r.problem).toMatchObject({ reason: 'InvalidParameters', field: 'spec.infrastructure.parametersRef' });
    return r.problem.message;
  };
  const JWKS = `
metadata:
  labels: { team: auth }
  annotations: { owner: sec }
spec:
  replicas: 2
  template:
    metadata:
      labels: { tier: mesh }
      annotations: { example.com/x: "1" }
    spec:
      containers:
      - name: istio-proxy
        env:
        - { name: JWKS_CA_CERTS, value: /etc/jwks-ca/ca.pem }
        - name: FROM_CM
          valueFrom: { configMapKeyRef: { name: settings, key: k } }
        volumeMounts:
        - { name: jwks-ca, mountPath: /etc/jwks-ca, readOnly: true }
        resources:
          limits: { memory: 256Mi }
      volumes:
      - name: jwks-ca
        configMap: { name: jwks-ca }
`;

  it('checks the reference when deploying (InvalidParameters for anything but a core ConfigMap by name), not in checkWaypoint: traffic does not depend on it', () => {
    expect(parametersConfigMap(ok(withRef()))).toBe('waypoint-params');
    expect(parametersConfigMap(ok(gw()))).toBeUndefined();
    const bad = (r: unknown) => {
      const w = ok(withRef(r)); // still a waypoint for the mesh model
      expect(parametersConfigMap(w)).toBeUndefined();
      const p = waypointParameters(w, cm('spec: { replicas: 2 }'));
      if (!('problem' in p)) throw new Error('accepted');
      expect(p.problem.reason).toBe('InvalidParameters');
      return p.problem;
    };
    expect(bad({ group: 'gateway.envoyproxy.io', kind: 'EnvoyProxy', name: 'p' })).toMatchObject({ field: 'spec.infrastructure.parametersRef' });
    expect(bad({ group: '', kind: 'Secret', name: 'p' }).message).toMatch(/a waypoint takes its parameters from a ConfigMap \(group "", kind ConfigMap\)/);
    expect(bad({ kind: 'ConfigMap', name: 'p' }).field).toBe('spec.infrastructure.parametersRef');
    expect(bad({ group: '', kind: 'ConfigMap', name: 'Not_A_Name' })).toMatchObject({ field: 'spec.infrastructure.parametersRef.name' });
    expect(bad({ group: '', kind: 'ConfigMap', name: 'p', namespace: 'other' })).toMatchObject({ field: 'spec.infrastructure.parametersRef.namespace' });
    expect(bad('p').message).toMatch(/expected an object/);
  });

  it('merges the subset into the Deployment: labels, annotations, replicas, env and mounts by name, volumes, resources with NODE_OPTIONS following them', () => {
    const w = ok(withRef());
    const r = waypointParameters(w, cm(JWKS));
    if ('problem' in r) throw new Error(r.problem.message);
    const base = renderWaypoint(w, opts).deployment;
    const d = renderWaypoint(w, opts, r.overlay).deployment as unknown as {
      metadata: { labels: Record<string, string>; annotations: Record<string, string> };
      spec: { replicas: number; template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: { automountServiceAccountToken: boolean; volumes: { name: string }[]; containers: { name: string; args: string[]; env: { name: string; value?: string }[]; volumeMounts: { name: string; mountPath: string }[]; resources: { limits: Record<string, string>; requests: Record<string, string> }; securityContext: unknown }[] } } };
    };
    expect(d.metadata.labels).toMatchObject({ team: 'auth', 'gateway.networking.k8s.io/gateway-name': 'waypoint' });
    expect(d.metadata.annotations).toMatchObject({ owner: 'sec' });
    expect(d.spec.replicas).toBe(2);
    expect(d.spec.template.metadata.labels).toMatchObject({ tier: 'mesh', 'istio.io/dataplane-mode': 'none' });
    expect(d.spec.template.metadata.annotations).toMatchObject({ 'example.com/x': '1', 'prometheus.io/scrape': 'true' });
    const c = d.spec.template.spec.containers[0]!;
    const baseC = (base.spec as { template: { spec: { containers: { args: string[]; env: unknown[]; securityContext: unknown }[] } } }).template.spec.containers[0]!;
    expect(c.env.find((e) => e.name === 'JWKS_CA_CERTS')).toEqual({ name: 'JWKS_CA_CERTS', value: '/etc/jwks-ca/ca.pem' });
    // weft's own env first, unchanged in name and order; the overlay's after.
    expect(c.env.slice(0, baseC.env.length).map((e) => e.name)).toEqual((baseC.env as { name: string }[]).map((e) => e.name));
    expect(c.env.slice(baseC.env.length).map((e) => e.name)).toEqual(['JWKS_CA_CERTS', 'FROM_CM']);
    expect(c.volumeMounts.map((m) => m.name)).toEqual(['istio-token', 'istiod-ca-cert', 'tmp', 'jwks-ca']);
    expect(d.spec.template.spec.volumes.map((v) => v.name)).toEqual(['istio-token', 'istiod-ca-cert', 'tmp', 'jwks-ca']);
    // resources merge per resource (cpu limit kept), and the heap follows the new memory limit.
    expect(c.resources.limits).toEqual({ cpu: '2', memory: '256Mi' });
    expect(c.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    expect(c.env.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe(waypointNodeOptions({ limits: { memory: '256Mi' } }));
    expect(c.env.find((e) => e.name === 'NODE_OPTIONS')?.value).toContain('--max-old-space-size=128');
    // What weft relies on is untouched.
    expect(c.args).toEqual(baseC.args);
    expect(c.securityContext).toEqual(baseC.securityContext);
    expect(d.spec.template.spec.automountServiceAccountToken).toBe(false);
    // No overlay, or an empty key: exactly the plain rendering.
    expect(renderWaypoint(w, opts, {})).toEqual(renderWaypoint(w, opts));
    expect(waypointParameters(w, { data: {} })).toEqual({ overlay: {} });
    expect(waypointParameters(ok(gw()), undefined)).toEqual({});
  });

  it('reports a missing ConfigMap, YAML that does not parse, keys weft does not read and fields outside the subset', () => {
    expect(params(undefined)).toEqual({ problem: { reason: 'InvalidParameters', field: 'spec.infrastructure.parametersRef', message: 'ConfigMap apps/waypoint-params not found' } });
    expect(refused('spec: [unclosed')).toMatch(/^ConfigMap apps\/waypoint-params: key deployment is not valid YAML/);
    expect(refused('a: 1\na: 2')).toMatch(/not valid YAML/);
    expect(refused('- a list')).toMatch(/must be an object/);
    expect(refused('', { service: 'spec: {}' })).toMatch(/key service is not supported by weft \(only deployment\)/);
    expect(refused('', { surprise: 'x' })).toMatch(/unknown key "surprise"/);
    expect(refused('kind: Deployment')).toMatch(/key deployment: kind: not supported by weft/);
    expect(refused('spec: { strategy: { type: Recreate } }')).toMatch(/spec\.strategy: not supported by weft \(supported here: replicas, template\)/);
    expect(refused('spec: { template: { spec: { nodeSelector: { a: b } } } }')).toMatch(/spec\.template\.spec\.nodeSelector: not supported/);
    expect(refused('spec: { replicas: -1 }')).toMatch(/spec\.replicas: must be a non-negative integer/);
    expect(refused('spec: { replicas: "2" }')).toMatch(/spec\.replicas/);
    expect(refused('metadata: { labels: { a: 1 } }')).toMatch(/metadata\.labels: must map strings to strings/);
    expect(refused('metadata: { labels: { "a b": x } }')).toMatch(/metadata\.labels\["a b"\]: not a valid key/);
    expect(refused('spec: { template: { metadata: { labels: { team: "has space" } } } }')).toMatch(/"has space" is not a valid label value/);
    expect(refused('spec: { template: { metadata: { annotations: { "Bad_Prefix/x": y } } } }')).toMatch(/not a valid key/);
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, env: [{ name: N, value: 3 }] }] } } }')).toMatch(/env\[0\]\.value: must be a string/);
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, env: [{ name: A, value: x }, { name: A, value: y }] }] } } }')).toMatch(/env\[1\]\.name: duplicate "A"/);
    expect(refused('spec: { template: { spec: { volumes: [{ name: h, hostPath: { path: / } }] } } }')).toMatch(/volumes\[0\]: exactly one of configMap, secret, emptyDir \(weft's subset; no hostPath\)/);
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, resources: { limits: { memory: lots } } }] } } }')).toMatch(/resources\.limits\.memory: "lots" is not a quantity/);
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, resources: { limits: { nvidia.com/gpu: "1" } } }] } } }')).toMatch(/not supported by weft/);
    // Merged with weft's defaults (requests 128Mi, 100m): a limit below the request is refused, as the API server would.
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, resources: { limits: { memory: 64Mi } } }] } } }')).toMatch(/resources: requests\.memory 128Mi is above limits\.memory 64Mi/);
    expect(refused('spec: { template: { spec: { containers: [{ name: istio-proxy, resources: { requests: { cpu: "3" } } }] } } }')).toMatch(/requests\.cpu 3 is above limits\.cpu 2/);
    expect(params('spec: { template: { spec: { containers: [{ name: istio-proxy, resources: { requests: { cpu: 1500m } } }] } } }')).not.toHaveProperty('problem');
  });

  it('refuses what would take away what weft relies on, with the reason', () => {
    const c = (body: string) => `spec: { template: { spec: { containers: [{ name: istio-proxy, ${body} }] } } }`;
    expect(refused(c('args: [sh]'))).toMatch(/containers\[0\]\.args: refused: weft's contract with the waypoint process/);
    expect(refused(c('command: [sh]'))).toMatch(/command: refused/);
    expect(refused(c('image: evil'))).toMatch(/image: refused: the control plane chooses/);
    expect(refused(c('securityContext: { privileged: true }'))).toMatch(/securityContext: refused: weft runs the waypoint unprivileged/);
    expect(refused('spec: { template: { spec: { securityContext: { runAsUser: 0 } } } }')).toMatch(/spec\.template\.spec\.securityContext: refused/);
    expect(refused('spec: { template: { spec: { automountServiceAccountToken: true } } }')).toMatch(/automountServiceAccountToken: refused: weft keeps it false/);
    expect(refused('spec: { template: { spec: { serviceAccountName: other } } }')).toMatch(/serviceAccountName: refused/);
    expect(refused('spec: { selector: { matchLabels: { a: b } } }')).toMatch(/spec\.selector: refused/);
    expect(refused('spec: { template: { spec: { containers: [{ name: sidecar, image: x }] } } }')).toMatch(/only the istio-proxy container may be customized/);
    expect(refused('spec: { template: { spec: { initContainers: [{ name: i }] } } }')).toMatch(/initContainers: refused/);
    // Strategic merge directives could delete weft's entries: refused.
    expect(refused(c('env: [{ name: POD_NAME, $patch: delete }]'))).toMatch(/\$patch: strategic merge patch directives are not supported/);
    expect(refused('spec: { template: { spec: { $retainKeys: [volumes] } } }')).toMatch(/directives are not supported/);
    // weft's env, volumes, mounts and mount paths cannot be replaced or shadowed.
    expect(refused(c('env: [{ name: NODE_OPTIONS, value: --require=/x.js }]'))).toMatch(/env\[name=NODE_OPTIONS\]: refused: weft derives it from resources\.limits\.memory/);
    expect(refused(c('env: [{ name: TRUST_DOMAIN, value: evil.org }]'))).toMatch(/env\[name=TRUST_DOMAIN\]: refused: set by weft/);
    expect(refused('spec: { template: { spec: { volumes: [{ name: istio-token, emptyDir: {} }] } } }')).toMatch(/volumes\[name=istio-token\]: refused: one of weft's volumes/);
    expect(refused('spec: { template: { spec: { volumes: [{ name: x, emptyDir: {} }], containers: [{ name: istio-proxy, volumeMounts: [{ name: x, mountPath: /var/run/secrets }] }] } } }')).toMatch(/refused: \/var\/run\/secrets overlaps weft's mount at \/var\/run\/secrets\/tokens/);
    expect(refused('spec: { template: { spec: { volumes: [{ name: x, emptyDir: {} }], containers: [{ name: istio-proxy, volumeMounts: [{ name: x, mountPath: /var/run/secrets/tokens/istio-token, subPath: t }] }] } } }')).toMatch(/overlaps/);
    expect(refused(c('volumeMounts: [{ name: istio-token, mountPath: /elsewhere }]'))).toMatch(/refused: one of weft's mounts/);
    expect(refused(c('volumeMounts: [{ name: nowhere, mountPath: /x }]'))).toMatch(/no volume of that name/);
    // Labels weft sets (the selector, the node agent's opt-out) may be repeated, not changed.
    expect(refused('spec: { template: { metadata: { labels: { istio.io/dataplane-mode: ambient } } } }')).toMatch(/labels\["istio.io\/dataplane-mode"\]: refused: weft sets it to "none"/);
    expect(refused('metadata: { labels: { gateway.networking.k8s.io/gateway-name: other } }')).toMatch(/refused/);
    expect(params('spec: { template: { metadata: { labels: { istio.io/dataplane-mode: none } } } }')).not.toHaveProperty('problem');
  });

  it('survives hostile overlays: YAML alias bombs and oversized keys are refused before they expand', () => {
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`)].join('\n');
    expect(refused(bomb)).toMatch(/not valid YAML/);
    expect(refused(`metadata: { annotations: { a: "${'x'.repeat(70_000)}" } }`)).toMatch(/larger than 65536 bytes/);
    expect(refused('metadata: { labels: { <<: *nothing } }')).toMatch(/not valid YAML/);
  });
});
