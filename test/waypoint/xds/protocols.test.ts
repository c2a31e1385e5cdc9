// How the waypoint reads a port's protocol from Envoy resources: a tcp_proxy listener is a TCP port
// relaying to its cluster, an api_listener an HTTP port; a cluster's HttpProtocolOptions say
// whether its upstream is HTTP/2. Shapes it cannot serve (more than one chain, a filter chain
// match, weighted tcp_proxy clusters, protocol options it does not implement) are refused by field.
import { describe, expect, it } from 'vitest';
import { buildCluster } from '../../../src/control/xds/envoy/clusters.ts';
import { buildListener } from '../../../src/control/xds/envoy/listeners.ts';
import { any, encode, HTTP_PROTOCOL_OPTIONS, TCP_PROXY } from '../../../src/control/xds/envoy/messages.ts';
import { compileCluster, compileListener } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy, TYPE_CLUSTER, TYPE_LISTENER } from '../../../src/waypoint/xds/envoy.ts';

const LISTENER = 'envoy.config.listener.v3.Listener';
const CLUSTER = 'envoy.config.cluster.v3.Cluster';
const listener = (o: object) => compileListener(decodeEnvoy(LISTENER, encode(LISTENER, { name: 'db:5432', ...o })));
const tcpChain = (tcp: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: any(TCP_PROXY, { statPrefix: 'x', ...tcp }) }], ...extra });
const cluster = (opts: Record<string, unknown>) => compileCluster(decodeEnvoy(CLUSTER, encode(CLUSTER, { name: 'c', type: 'EDS', typedExtensionProtocolOptions: { [HTTP_PROTOCOL_OPTIONS]: any(HTTP_PROTOCOL_OPTIONS, opts) } })));

describe('waypoint xDS protocols', () => {
  it('reads what the control plane writes: TCP and HTTP listeners, HTTP/2 and HTTP/1.1 clusters', () => {
    expect(compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('db.ns.svc.cluster.local', 5432, 'tcp')))).toEqual({ name: 'db.ns.svc.cluster.local:5432', tcpCluster: 'outbound|5432||db.ns.svc.cluster.local', filters: { http: [], network: [] } });
    expect(compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 80, 'http')))).toEqual({ name: 'web:80', routeConfigName: 'web:80', filters: { http: [], network: [] } });
    expect(compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 81, 'auto')))).toEqual({ name: 'web:81', routeConfigName: 'web:81', fallbackTcpCluster: 'outbound|81||web', filters: { http: [], network: [] } });
    expect(compileCluster(decodeEnvoy(TYPE_CLUSTER, buildCluster('g', {}, undefined, true))).http2).toBe(true);
    expect(compileCluster(decodeEnvoy(TYPE_CLUSTER, buildCluster('h', {}))).http2).toBe(false);
    expect(cluster({ explicitHttpConfig: { httpProtocolOptions: {} } }).http2).toBe(false);
  });

  it('refuses the shapes it cannot serve, naming the field', () => {
    expect(() => listener({ filterChains: [tcpChain({ cluster: 'a' }), tcpChain({ cluster: 'b' })] })).toThrow(/db:5432\.filter_chains: 2 chains/);
    expect(() => listener({ filterChains: [tcpChain({ cluster: 'a' }, { filterChainMatch: { destinationPort: { value: 1 } } })] })).toThrow(/filter_chain_match: not supported/);
    expect(() => listener({ filterChains: [tcpChain({ weightedClusters: { clusters: [{ name: 'a', weight: 1 }] } })] })).toThrow(/tcp_proxy\)\.weightedClusters: not supported/);
    expect(() => listener({ filterChains: [tcpChain({ cluster: 'a', idleTimeout: { seconds: 1 } })] })).toThrow(/idleTimeout: not supported/);
    expect(() => listener({ filterChains: [{ filters: [] }] })).toThrow(/a chain ending in one tcp_proxy/);
    expect(() => listener({})).toThrow(/no api_listener and no filter_chains/);
    expect(() => listener({ filterChains: [tcpChain({ cluster: 'a' })], defaultFilterChain: tcpChain({ cluster: 'b' }) })).toThrow(/default_filter_chain: beside filter_chains/);
    const http = (o: object) => decodeEnvoy(LISTENER, encode(LISTENER, { ...(decodeEnvoy(TYPE_LISTENER, buildListener('web', 81, 'http')) as object), ...o }));
    expect(() => compileListener(http({ defaultFilterChain: tcpChain({ cluster: 'a', idleTimeout: { seconds: 1 } }) }))).toThrow(/web:81\.default_filter_chain\.filters\[0\] \(tcp_proxy\)\.idleTimeout: not supported/);
    expect(() => compileListener(http({ defaultFilterChain: { filters: [] } }))).toThrow(/default_filter_chain\.filters: the waypoint takes a chain ending in one tcp_proxy/);
    expect(() => cluster({ useDownstreamProtocolConfig: {} })).toThrow(/Cluster c\.typed_extension_protocol_options\[.*HttpProtocolOptions\]: only explicit_http_config/);
    expect(() => compileCluster(decodeEnvoy(CLUSTER, encode(CLUSTER, { name: 'c', type: 'EDS', typedExtensionProtocolOptions: { 'envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions': any(TCP_PROXY) } })))).toThrow(/not supported by the waypoint/);
  });
});
