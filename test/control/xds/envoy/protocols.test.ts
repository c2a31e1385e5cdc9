// What the control plane says about a service port's protocol, as Istio selects it (appProtocol,
// then the port name): HTTP ports keep the api_listener proxyless gRPC resolves, a port declared as
// something else gets a tcp_proxy listener naming its cluster, and HTTP/2 ports (http2, grpc,
// grpc-web) a cluster whose upstream is HTTP/2.
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../../../src/kube/objects.ts';
import { validateObject } from '../../../../src/kube/manifest.ts';
import { parseNetworking } from '../../../../src/control/model/networking/config.ts';
import { servicePortProtocol } from '../../../../src/control/model/networking/protocol.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, HCM, HTTP_PROTOCOL_OPTIONS, TCP_PROXY, TYPE_CLUSTER, TYPE_LISTENER } from '../../../../src/control/xds/envoy/messages.ts';
import { istio, NS } from './harness.ts';

const HOST = `multi.${NS}.svc.cluster.local`;
const service = (): KObject => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'multi', namespace: NS },
  spec: {
    selector: { app: 'multi' }, clusterIP: '10.96.0.40',
    ports: [
      { name: 'http-web', port: 80 },
      { name: 'rpc', appProtocol: 'grpc', port: 9090 },
      { name: 'http2', port: 8081 },
      { name: 'tcp-db', port: 5432 },
      { name: 'http-but-tcp', appProtocol: 'tcp', port: 6000 },
      { name: 'plain', port: 7000 },
    ],
  },
} as KObject);

type Any = { typeUrl?: string; type_url?: string; value: Uint8Array };
const url = (a: Any | undefined) => a?.typeUrl ?? a?.type_url;
const listener = (port: number) => decode(TYPE_LISTENER, buildEnvoyResources([service()], DEFAULT_MESH).resources.get(TYPE_LISTENER)!.get(`${HOST}:${port}`)!);
const cluster = (port: number) => decode(TYPE_CLUSTER, buildEnvoyResources([service()], DEFAULT_MESH).resources.get(TYPE_CLUSTER)!.get(`outbound|${port}||${HOST}`)!);

describe('service port protocols', () => {
  it('selects as Istio does: appProtocol first, then the name prefix; undeclared is auto', () => {
    expect(servicePortProtocol({ name: 'http' })).toBe('http');
    expect(servicePortProtocol({ name: 'HTTP2-x' })).toBe('http2');
    expect(servicePortProtocol({ name: 'grpc-web-ui' })).toBe('grpc-web');
    expect(servicePortProtocol({ name: 'grpc-api' })).toBe('grpc');
    expect(servicePortProtocol({ name: 'httpx' })).toBe('auto');
    expect(servicePortProtocol({ name: 'http', appProtocol: 'tcp' })).toBe('tcp');
    expect(servicePortProtocol({ name: 'x', appProtocol: 'kubernetes.io/h2c' })).toBe('http2');
    expect(servicePortProtocol({ name: 'mysql' })).toBe('tcp');
    expect(servicePortProtocol({})).toBe('auto');
  });

  it('gives HTTP ports the api_listener and declared TCP ports a tcp_proxy to their cluster', () => {
    for (const port of [80, 9090, 8081, 7000]) {
      const l = listener(port) as { apiListener?: { apiListener: Any }; filterChains?: unknown[]; defaultFilterChain?: { filters: { typedConfig: Any }[] } };
      expect(url(l.apiListener?.apiListener), `port ${port}`).toBe(`type.googleapis.com/${HCM}`);
      expect(l.filterChains).toBeUndefined();
      // Undeclared (7000): what is not HTTP goes to the port's cluster through the default chain.
      if (port !== 7000) expect(l.defaultFilterChain, `port ${port}`).toBeUndefined();
      else expect(decode(TCP_PROXY, l.defaultFilterChain!.filters[0]!.typedConfig.value)).toMatchObject({ cluster: `outbound|7000||${HOST}` });
    }
    for (const port of [5432, 6000]) {
      const l = listener(port) as { apiListener?: unknown; filterChains: { filters: { name: string; typedConfig: Any }[] }[] };
      expect(l.apiListener).toBeUndefined();
      const f = l.filterChains[0]!.filters[0]!;
      expect(url(f.typedConfig)).toBe(`type.googleapis.com/${TCP_PROXY}`);
      expect(decode(TCP_PROXY, f.typedConfig.value)).toMatchObject({ cluster: `outbound|${port}||${HOST}` });
    }
  });

  it('marks HTTP/2 upstreams on the cluster (http2, grpc), and only those', () => {
    const opts = (port: number) => (cluster(port) as { typedExtensionProtocolOptions?: Record<string, Any> }).typedExtensionProtocolOptions;
    for (const port of [9090, 8081]) {
      const any = opts(port)?.[HTTP_PROTOCOL_OPTIONS];
      expect(any, `port ${port}`).toBeDefined();
      expect(decode(HTTP_PROTOCOL_OPTIONS, any!.value)).toMatchObject({ explicitHttpConfig: { http2ProtocolOptions: {} } });
    }
    for (const port of [80, 7000, 5432]) expect(opts(port), `port ${port}`).toBeUndefined();
  });

  it('reads a ServiceEntry port protocol and refuses one Istio does not know', () => {
    const se = (protocol: string) => istio('ServiceEntry', 'ext', { hosts: ['ext.example.com'], resolution: 'STATIC', ports: [{ number: 80, name: 'web', protocol }], endpoints: [{ address: '10.1.1.1' }] });
    const built = buildEnvoyResources([se('GRPC')], DEFAULT_MESH);
    const c = decode(TYPE_CLUSTER, built.resources.get(TYPE_CLUSTER)!.get('outbound|80||ext.example.com')!) as { typedExtensionProtocolOptions?: object };
    expect(c.typedExtensionProtocolOptions).toBeDefined();
    const tcp = decode(TYPE_LISTENER, buildEnvoyResources([se('TCP')], DEFAULT_MESH).resources.get(TYPE_LISTENER)!.get('ext.example.com:80')!) as { filterChains?: unknown[] };
    expect(tcp.filterChains).toHaveLength(1);
    expect(parseNetworking([se('QUIC')], DEFAULT_MESH).problems.map((p) => p.field)).toEqual(['spec.ports[0].protocol']);
  });

  it('the manifest validator takes appProtocol and refuses an empty one', () => {
    const svc = (appProtocol: unknown) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'ns' }, spec: { ports: [{ name: 'a', port: 80, appProtocol }] } });
    expect(validateObject(svc('grpc'))).not.toHaveProperty('problem');
    expect(validateObject(svc(''))).toMatchObject({ field: 'spec.ports[0].appProtocol' });
  });
});
