// The Telemetry API into a waypoint's Listeners: which objects apply (mesh-wide, namespace-wide,
// Gateway- or Service-targeted, the oldest namespace-wide one), how they merge, the OpenTelemetry
// provider from mesh config as Envoy's tracer, access logging on and off, and every field weft
// cannot honour reported by object and field.
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, HCM, TYPE_LISTENER } from '../../../../src/control/xds/envoy/messages.ts';

type Msg = Record<string, unknown>;
const NS = 'app';
const ROOT = 'istio-system';
const unAny = (a: Msg): Msg => decode(String(a.type_url ?? a.typeUrl), a.value as Uint8Array);

const svc = (name: string): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] } });
const waypoint = (name = 'waypoint'): KObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name, namespace: NS },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
});
const telemetry = (name: string, spec: object, ns = NS, created = '2026-01-01T00:00:00Z'): KObject => ({ apiVersion: 'telemetry.istio.io/v1', kind: 'Telemetry', metadata: { name, namespace: ns, creationTimestamp: created }, spec });
const mesh = (yaml: string): KObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: ROOT }, data: { mesh: yaml } } as KObject);
const OTEL = `
extensionProviders:
- name: otel
  opentelemetry:
    service: opentelemetry-collector.observability.svc.cluster.local
    port: 4318
    http:
      path: /v1/traces
      timeout: 5s
      headers:
      - name: x-tenant
        value: t1
- name: zipkin
  zipkin: { service: zipkin.istio-system.svc.cluster.local, port: 9411 }
`;
const toGateway = { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' }] };
const toService = { targetRefs: [{ group: '', kind: 'Service', name: 'web' }] };

function hcmOf(objects: KObject[], listener: string) {
  const built = buildEnvoyResources(objects, DEFAULT_MESH);
  const body = built.resources.get(TYPE_LISTENER)!.get(listener);
  if (!body) return { hcm: undefined, problems: built.problems };
  const l = decode(TYPE_LISTENER, body);
  const any = ((l.apiListener as Msg).apiListener as Msg);
  return { hcm: decode(HCM, any.value as Uint8Array), problems: built.problems };
}
const own = (objects: KObject[]) => hcmOf(objects, `waypoint/${NS}/waypoint`);
const port = (objects: KObject[]) => hcmOf(objects, `web.${NS}.svc.cluster.local:80`);

function tracer(hcm: Msg | undefined) {
  const t = hcm?.tracing as Msg | undefined;
  if (!t) return undefined;
  const provider = t.provider as Msg;
  return { name: provider.name, config: unAny(provider.typedConfig as Msg), sampling: (t.randomSampling as Msg | undefined)?.value, tags: t.customTags };
}
const logPath = (hcm: Msg | undefined) => ((hcm?.accessLog as Msg[] | undefined) ?? []).map((l) => [l.name, unAny(l.typedConfig as Msg).path]);

describe('Telemetry for a waypoint', () => {
  it('a mesh-wide Telemetry gives every waypoint Envoy\'s OpenTelemetry tracer, with the provider\'s collector as an outbound cluster', () => {
    const { hcm, problems } = own([mesh(OTEL), waypoint(), svc('web'), telemetry('mesh-default', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 10 }] }, ROOT)]);
    expect(problems).toEqual([]);
    expect(tracer(hcm)).toEqual({
      name: 'envoy.tracers.opentelemetry',
      config: {
        httpService: {
          httpUri: { uri: 'opentelemetry-collector.observability.svc.cluster.local/v1/traces', httpUpstreamType: 'cluster', cluster: 'outbound|4318||opentelemetry-collector.observability.svc.cluster.local', timeout: { seconds: 5 } },
          requestHeadersToAdd: [{ header: { key: 'x-tenant', value: 't1' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
        },
        serviceName: `waypoint.${NS}`,
      },
      sampling: 10,
      tags: undefined,
    });
    // Nothing targets the Service: its port carries no telemetry of its own.
    expect(port([mesh(OTEL), waypoint(), svc('web'), telemetry('mesh-default', { tracing: [{ providers: [{ name: 'otel' }] }] }, ROOT)]).hcm?.tracing).toBeUndefined();
  });

  it('defaultProviders.tracing alone enables tracing at Istio\'s default 1 %, or the mesh\'s defaultConfig sampling', () => {
    expect(tracer(own([mesh(`${OTEL}\ndefaultProviders: { tracing: [otel] }`), waypoint()]).hcm)?.sampling).toBe(1);
    expect(tracer(own([mesh(`${OTEL}\ndefaultProviders: { tracing: [otel] }\ndefaultConfig: { tracing: { sampling: 25 } }`), waypoint()]).hcm)?.sampling).toBe(25);
    // No Telemetry and no default provider: no tracing, and no waypoint listener is needed.
    expect(own([mesh(OTEL), waypoint()]).hcm).toBeUndefined();
  });

  it('merges most specific last: namespace over mesh, Gateway over namespace; custom tags by name', () => {
    const objects = [
      mesh(OTEL), waypoint(), svc('web'),
      telemetry('mesh-default', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 5, customTags: { team: { literal: { value: 'core' } }, region: { literal: { value: 'eu' } } } }] }, ROOT),
      telemetry('ns', { tracing: [{ randomSamplingPercentage: 50, customTags: { region: { environment: { name: 'REGION', defaultValue: 'none' } } } }] }),
      telemetry('gw', { ...toGateway, tracing: [{ customTags: { user: { header: { name: 'x-user' } } } }] }),
    ];
    const t = tracer(own(objects).hcm)!;
    expect(t.sampling).toBe(50);
    expect(t.tags).toEqual([
      { tag: 'team', type: 'literal', literal: { value: 'core' } },
      { tag: 'region', type: 'environment', environment: { name: 'REGION', defaultValue: 'none' } },
      { tag: 'user', type: 'requestHeader', requestHeader: { name: 'x-user' } },
    ]);
    // A Service-targeted Telemetry: that port's listener carries mesh -> namespace -> Service.
    const p = port([...objects, telemetry('web', { ...toService, tracing: [{ randomSamplingPercentage: 100 }] })]);
    expect(tracer(p.hcm)!.sampling).toBe(100);
    expect(p.problems).toEqual([]);
  });

  it('the oldest of two namespace-wide Telemetry applies, the other is reported', () => {
    const { hcm, problems } = own([
      mesh(OTEL), waypoint(),
      telemetry('young', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 70 }] }, NS, '2026-02-01T00:00:00Z'),
      telemetry('old', { tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 30 }] }, NS, '2026-01-01T00:00:00Z'),
    ]);
    expect(tracer(hcm)!.sampling).toBe(30);
    expect(problems).toContainEqual(expect.objectContaining({ kind: 'Telemetry', name: 'young', field: 'spec' }));
  });

  it('disableSpanReporting turns tracing off for the more specific scope', () => {
    const { hcm } = own([mesh(OTEL), waypoint(), telemetry('mesh-default', { tracing: [{ providers: [{ name: 'otel' }] }] }, ROOT), telemetry('gw', { ...toGateway, tracing: [{ disableSpanReporting: true }] })]);
    expect(hcm?.tracing).toBeUndefined();
  });

  it('access logging on is the file logger to /dev/stdout; off (where weft logs by default) the same logger to /dev/null', () => {
    expect(logPath(own([waypoint(), telemetry('on', { ...toGateway, accessLogging: [{ providers: [{ name: 'envoy' }] }] })]).hcm)).toEqual([['envoy.access_loggers.file', '/dev/stdout']]);
    const objects = [waypoint(), svc('web'), telemetry('mesh-default', { accessLogging: [{ disabled: false }] }, ROOT), telemetry('off', { accessLogging: [{ disabled: true }] })];
    expect(logPath(own(objects).hcm)).toEqual([['envoy.access_loggers.file', '/dev/null']]);
    expect(logPath(port([...objects, telemetry('web', { ...toService, accessLogging: [{}] })]).hcm)).toEqual([['envoy.access_loggers.file', '/dev/stdout']]);
    // A CLIENT-only entry is not the waypoint's (server side) log.
    expect(own([waypoint(), telemetry('gw', { ...toGateway, accessLogging: [{ match: { mode: 'CLIENT' }, disabled: true }] })]).hcm?.accessLog).toBeUndefined();
  });

  it('reports unknown providers, kinds weft does not export to, gRPC OTLP, and metric overrides by object and field', () => {
    const grpcOnly = `extensionProviders:\n- name: otel-grpc\n  opentelemetry: { service: collector.obs.svc.cluster.local, port: 4317 }\n${OTEL.replace('extensionProviders:\n', '')}`;
    const { hcm, problems } = own([
      mesh(grpcOnly), waypoint(),
      telemetry('a', { ...toGateway, tracing: [{ providers: [{ name: 'nope' }] }], metrics: [{ providers: [{ name: 'prometheus' }], overrides: [{ match: { metric: 'REQUEST_COUNT' }, disabled: true }] }] }),
    ]);
    expect(hcm?.tracing).toBeUndefined();
    expect(problems).toContainEqual(expect.objectContaining({ kind: 'Telemetry', name: 'a', field: 'spec.tracing[0].providers', reason: expect.stringContaining('unknown provider nope') }));
    expect(problems).toContainEqual(expect.objectContaining({ kind: 'Telemetry', name: 'a', field: 'spec.metrics[0].overrides' }));
    const z = own([mesh(grpcOnly), waypoint(), telemetry('z', { ...toGateway, tracing: [{ providers: [{ name: 'zipkin' }] }] })]);
    expect(z.problems).toContainEqual(expect.objectContaining({ name: 'z', reason: expect.stringContaining('zipkin') }));
    const g = own([mesh(grpcOnly), waypoint(), telemetry('g', { ...toGateway, tracing: [{ providers: [{ name: 'otel-grpc' }] }] })]);
    expect(g.hcm?.tracing).toBeUndefined();
    expect(g.problems).toContainEqual(expect.objectContaining({ kind: 'ConfigMap', name: 'istio', field: 'data.mesh: extensionProviders[0].opentelemetry.http' }));
    const bad = own([mesh(OTEL), waypoint(), telemetry('b', { ...toGateway, tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: 300, customTags: { x: { metadata: {} } } }] })]);
    expect(tracer(bad.hcm)!.sampling).toBe(1);
    expect(bad.problems.map((p) => p.field)).toEqual(expect.arrayContaining(['spec.tracing[0].randomSamplingPercentage', 'spec.tracing[0].customTags.x.metadata']));
  });
});
