// The HCM's tracing and access log as the waypoint compiles them: what the control plane writes for
// Telemetry (mesh-wide, through the waypoint's own Listener, and per Service) reaches the routing
// table merged port-over-own; a tracing config the waypoint cannot serve refuses the Listener.
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../src/control/xds/envoy/build.ts';
import { buildListener } from '../../src/control/xds/envoy/listeners.ts';
import { any } from '../../src/control/xds/envoy/messages.ts';
import { compileListener } from '../../src/waypoint/xds/compile.ts';
import { WaypointConfig } from '../../src/waypoint/xds/config.ts';
import { decodeEnvoy, TYPE_LISTENER } from '../../src/waypoint/xds/envoy.ts';

const NS = 'app';
const svc = (name: string): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] } });
const waypoint: KObject = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: NS }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } };
const mesh = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: 'extensionProviders:\n- name: otel\n  opentelemetry: { service: collector.obs.svc.cluster.local, port: 4318, http: { path: /v1/traces } }\n' } } as KObject;
const tel = (name: string, ns: string, spec: object): KObject => ({ apiVersion: 'telemetry.istio.io/v1', kind: 'Telemetry', metadata: { name, namespace: ns }, spec });

function table(objects: KObject[]) {
  const built = buildEnvoyResources(objects, DEFAULT_MESH);
  const config = new WaypointConfig({ gateway: { namespace: NS, name: 'waypoint' } });
  const lds = config.watches().find((w) => w.typeUrl === TYPE_LISTENER)!;
  lds.apply({ typeUrl: TYPE_LISTENER, resources: [...built.resources.get(TYPE_LISTENER)!].map(([name, body]) => ({ name, body, version: '1' })), removed: [] } as never);
  return config.table;
}

describe('waypoint telemetry config', () => {
  it('a mesh-wide Telemetry reaches every port through the waypoint\'s own listener; a Service\'s overrides it part by part', () => {
    const base = [mesh, waypoint, svc('web'), svc('api'), tel('mesh', 'istio-system', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 10 }] })];
    let t = table(base);
    expect(t.ownTelemetry?.tracing).toMatchObject({ cluster: 'outbound|4318||collector.obs.svc.cluster.local', path: '/v1/traces', samplingPercent: 10, serviceName: `waypoint.${NS}`, timeoutMs: 10_000 });
    expect(t.telemetry?.get(`web.${NS}.svc.cluster.local:80`)?.tracing?.samplingPercent).toBe(10);
    expect(t.telemetry?.get(`api.${NS}.svc.cluster.local:80`)?.accessLog).toBeUndefined();
    t = table([...base, tel('web', NS, { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], accessLogging: [{ disabled: true }] })]);
    // The Service's Telemetry sets only logging: tracing still comes from the mesh (its chain includes it).
    expect(t.telemetry?.get(`web.${NS}.svc.cluster.local:80`)).toMatchObject({ accessLog: false, tracing: { samplingPercent: 10 } });
    expect(t.telemetry?.get(`api.${NS}.svc.cluster.local:80`)?.accessLog).toBeUndefined();
  });

  it('refuses tracing it cannot serve, naming the Listener and field', () => {
    const hcmWith = (tracing: Record<string, unknown>, accessLog?: Record<string, unknown>[]) =>
      decodeEnvoy(TYPE_LISTENER, buildListener('web', 80, 'http', { httpFilters: [], networkFilters: [], tracing, ...(accessLog && { accessLog }) }));
    const otel = (cfg: Record<string, unknown>) => ({ name: 'envoy.tracers.opentelemetry', typedConfig: any('envoy.config.trace.v3.OpenTelemetryConfig', cfg) });
    const http = { httpService: { httpUri: { uri: 'c/v1/traces', cluster: 'outbound|4318||c', timeout: { seconds: 1 } } } };
    expect(compileListener(hcmWith({ provider: otel(http), randomSampling: { value: 5 } })).telemetry?.tracing).toMatchObject({ samplingPercent: 5, path: '/v1/traces', timeoutMs: 1000 });
    // Envoy's default random_sampling is 100 %.
    expect(compileListener(hcmWith({ provider: otel(http) })).telemetry?.tracing?.samplingPercent).toBe(100);
    expect(() => compileListener(hcmWith({ provider: otel({ grpcService: { envoyGrpc: { clusterName: 'x' } } }) }))).toThrow(/Listener web:80: tracing\.provider\.typed_config\.grpcService: not supported/);
    expect(() => compileListener(hcmWith({ provider: { name: 'envoy.tracers.zipkin' } }))).toThrow(/Listener web:80: tracing\.provider: envoy\.tracers\.zipkin/);
    expect(() => compileListener(hcmWith({ provider: otel(http), clientSampling: { value: 50 } }))).toThrow(/clientSampling: only 100 %/);
    expect(() => compileListener(hcmWith({ provider: otel({ httpService: { httpUri: { uri: 'c/v1/traces' } } }) }))).toThrow(/http_uri\.cluster: empty/);
    expect(() => compileListener(hcmWith({ provider: otel(http) }, [{ name: 'envoy.access_loggers.file', typedConfig: any('envoy.config.trace.v3.OpenTelemetryConfig', {}) }]))).toThrow(/access_log\[0\]\.typed_config: expected a FileAccessLog/);
  });
});
