// The client-side Listener for one service port, as proxyless gRPC resolves `xds:///host:port`: an
// api_listener whose HttpConnectionManager takes its routes from RDS. The fault filter is always
// present (empty: inert) so a route can enable faults without changing the listener; so is the
// local rate limit filter, as an optional one (proxyless gRPC clients do not have it).
import { ADS_SOURCE, any, encode } from './messages.ts';
import { listenerName } from './names.ts';
import { localRateLimitFilter } from './rate-limit.ts';
import { FAULT_FILTER } from './routes.ts';

export function buildListener(host: string, port: number): Uint8Array {
  const name = listenerName(host, port);
  const hcm = {
    statPrefix: name,
    rds: { configSource: ADS_SOURCE, routeConfigName: name },
    httpFilters: [
      { name: FAULT_FILTER, typedConfig: any('envoy.extensions.filters.http.fault.v3.HTTPFault') },
      localRateLimitFilter(),
      { name: 'envoy.filters.http.router', typedConfig: any('envoy.extensions.filters.http.router.v3.Router') },
    ],
  };
  return encode('envoy.config.listener.v3.Listener', { name, apiListener: { apiListener: any('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', hcm) } });
}
