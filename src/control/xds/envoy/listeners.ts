// The Listener for one service port. An HTTP port (declared, or not declared: `auto`) gets what
// proxyless gRPC resolves `xds:///host:port` to: an api_listener whose HttpConnectionManager takes
// its routes from RDS. The fault filter is always present (empty: inert) so a route can enable
// faults without changing the listener; so is the local rate limit filter, as an optional one
// (proxyless gRPC clients do not have it). A port declared as something other than HTTP (tcp, tls,
// mongo...) gets what Istio gives a waypoint for it: a filter chain whose tcp_proxy sends the bytes
// to the port's cluster, and no HTTP routes (an HTTP client has nothing to resolve there). A port
// whose protocol is not declared (`auto`) gets both: HTTP through the HttpConnectionManager, and a
// default_filter_chain whose tcp_proxy takes what is not HTTP (Istio detects HTTP on such ports
// and relays anything else as TCP). Proxyless gRPC reads only the api_listener.
import type { PortProtocol } from '../../model/networking/protocol.ts';
import { ADS_SOURCE, any, encode, HCM, TCP_PROXY } from './messages.ts';
import { clusterName, listenerName } from './names.ts';
import { localRateLimitFilter } from './rate-limit.ts';
import { FAULT_FILTER } from './routes.ts';

export function buildListener(host: string, port: number, protocol: PortProtocol = 'auto'): Uint8Array {
  const name = listenerName(host, port);
  if (protocol === 'tcp') return encode('envoy.config.listener.v3.Listener', { name, filterChains: [tcpChain(name, host, port)] });
  const hcm = {
    statPrefix: name,
    rds: { configSource: ADS_SOURCE, routeConfigName: name },
    httpFilters: [
      { name: FAULT_FILTER, typedConfig: any('envoy.extensions.filters.http.fault.v3.HTTPFault') },
      localRateLimitFilter(),
      { name: 'envoy.filters.http.router', typedConfig: any('envoy.extensions.filters.http.router.v3.Router') },
    ],
  };
  const fallback = protocol === 'auto' ? { defaultFilterChain: tcpChain(name, host, port) } : {};
  return encode('envoy.config.listener.v3.Listener', { name, apiListener: { apiListener: any(HCM, hcm) }, ...fallback });
}

/** A filter chain whose tcp_proxy relays the port's bytes to its cluster. */
function tcpChain(name: string, host: string, port: number) {
  const tcp = { statPrefix: name, cluster: clusterName(host, port) };
  return { name, filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: any(TCP_PROXY, tcp) }] };
}
