// The Listener for one service port. An HTTP port (declared, or not declared: `auto`) gets what
// proxyless gRPC resolves `xds:///host:port` to: an api_listener whose HttpConnectionManager takes
// its routes from RDS. The fault filter is always present (empty: inert) so a route can enable
// faults without changing the listener; so is the local rate limit filter, as an optional one
// (proxyless gRPC clients do not have it). A port declared as something other than HTTP (tcp, tls,
// mongo...) gets what Istio gives a waypoint for it: a filter chain whose tcp_proxy sends the bytes
// to the port's cluster, and no HTTP routes (an HTTP client has nothing to resolve there).
import type { PortProtocol } from '../../model/networking/protocol.ts';
import { ADS_SOURCE, any, encode, HCM, TCP_PROXY } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { localRateLimitFilter } from './rate-limit.ts';
import { FAULT_FILTER } from './routes.ts';

export function buildListener(host: string, port: number, protocol: PortProtocol = 'auto'): Uint8Array {
  const name = listenerName(host, port);
  if (protocol === 'tcp') {
    const tcp = { statPrefix: name, cluster: clusterName(host, port) };
    return encode('envoy.config.listener.v3.Listener', { name, filterChains: [{ name, filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: any(TCP_PROXY, tcp) }] }] });
  }
  const hcm = {
    statPrefix: name,
    rds: { configSource: ADS_SOURCE, routeConfigName: name },
    httpFilters: [
      { name: FAULT_FILTER, typedConfig: any('envoy.extensions.filters.http.fault.v3.HTTPFault') },
      localRateLimitFilter(),
      { name: 'envoy.filters.http.router', typedConfig: any('envoy.extensions.filters.http.router.v3.Router') },
    ],
  };
  return encode('envoy.config.listener.v3.Listener', { name, apiListener: { apiListener: any(HCM, hcm) } });
}
