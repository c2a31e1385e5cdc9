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
import { gatewayListenerName, NO_EXTRAS, type ListenerExtras } from './listener-extras.ts';

export function buildListener(host: string, port: number, protocol: PortProtocol = 'auto', extras: ListenerExtras = NO_EXTRAS): Uint8Array {
  const name = listenerName(host, port);
  if (protocol === 'tcp') return encode('envoy.config.listener.v3.Listener', { name, filterChains: [tcpChain(name, host, port, extras)] });
  const hcm = {
    statPrefix: name,
    rds: { configSource: ADS_SOURCE, routeConfigName: name },
    ...hcmExtras(extras),
    httpFilters: [
      ...extras.httpFilters,
      { name: FAULT_FILTER, typedConfig: any('envoy.extensions.filters.http.fault.v3.HTTPFault') },
      localRateLimitFilter(),
      { name: 'envoy.filters.http.router', typedConfig: any('envoy.extensions.filters.http.router.v3.Router') },
    ],
  };
  const fallback = protocol === 'auto' ? { defaultFilterChain: tcpChain(name, host, port, extras) } : {};
  return encode('envoy.config.listener.v3.Listener', { name, apiListener: { apiListener: any(HCM, hcm) }, ...fallback });
}

/**
 * A waypoint's own Listener (listener-extras.ts): what targets its Gateway, for the waypoint to
 * merge into each port it serves. An HttpConnectionManager with the HTTP filters, tracing and
 * access log and no routes (the ports have them), and a default_filter_chain with the network
 * filters and no tcp_proxy (the ports name the clusters). weft's waypoint reads it; nothing else does.
 */
export function buildGatewayListener(namespace: string, gateway: string, extras: ListenerExtras): Uint8Array {
  const name = gatewayListenerName(namespace, gateway);
  const hcm = { statPrefix: name, ...hcmExtras(extras), httpFilters: extras.httpFilters };
  return encode('envoy.config.listener.v3.Listener', { name, apiListener: { apiListener: any(HCM, hcm) }, defaultFilterChain: { name, filters: extras.networkFilters } });
}

const hcmExtras = (e: ListenerExtras) => ({ ...(e.tracing && { tracing: e.tracing }), ...(e.accessLog?.length && { accessLog: e.accessLog }) });

/** A filter chain whose tcp_proxy relays the port's bytes to its cluster, after the attached network filters (RBAC). */
function tcpChain(name: string, host: string, port: number, extras: ListenerExtras) {
  const tcp = { statPrefix: name, cluster: clusterName(host, port) };
  return { name, filters: [...extras.networkFilters, { name: 'envoy.filters.network.tcp_proxy', typedConfig: any(TCP_PROXY, tcp) }] };
}
