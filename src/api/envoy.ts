// Envoy v3 messages as xDS carries them (Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment and the extensions weft uses), from the protos @grpc/grpc-js-xds ships,
// loaded once per process. The control plane encodes them (src/control/xds/envoy) and the waypoint
// decodes them (src/waypoint/xds): one definition of the wire both sides speak.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { compactRoot, OPTION_ONLY, PROTO_DIRS } from './protos.ts';

export const TYPE_LISTENER = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const TYPE_ROUTE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const TYPE_CLUSTER = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const TYPE_ENDPOINT = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
/** Dependency order: a client should learn clusters before the routes that name them. */
export const ENVOY_TYPES = [TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE] as const;
export const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
/** A TCP port's listener: bytes to one cluster. */
export const TCP_PROXY = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
/** A cluster's upstream HTTP version (its typed_extension_protocol_options entry has this name). */
export const HTTP_PROTOCOL_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

/** The .proto files of the messages and extensions weft speaks. */
export const ENVOY_FILES = [
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto',
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/load_balancing_policies/random/v3/random.proto',
  // Security and telemetry attached to a waypoint (AuthorizationPolicy, RequestAuthentication, Telemetry).
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/path/match/uri_template/v3/uri_template_match.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/jwt_authn/v3/config.proto',
  'envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto',
  'envoy/config/trace/v3/opentelemetry.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
];

let root: protobuf.Root | undefined;
function envoyRoot(): protobuf.Root {
  if (!root) {
    // The imports that only declare custom options (validation rules, annotations) are not read,
    // as for the ADS service: nothing reads those options. Rebuilt without the files' text.
    const r = new protobuf.Root();
    r.resolvePath = (_origin, target) => (OPTION_ONLY.test(target) ? null : PROTO_DIRS.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target) as string;
    r.loadSync(ENVOY_FILES, { keepCase: false });
    root = compactRoot(r);
  }
  return root;
}

const types = new Map<string, protobuf.Type>();
/** A message type by its full name, e.g. envoy.config.cluster.v3.Cluster. */
export function envoyType(name: string): protobuf.Type {
  let t = types.get(name);
  if (!t) types.set(name, (t = envoyRoot().lookupType(name)));
  return t;
}

/** A message by its type name or URL as a plain object (camelCase, enums by name); throws when the bytes do not decode. */
export function decodeEnvoy(typeOrUrl: string, body: Uint8Array): Record<string, unknown> {
  const t = envoyType(typeOrUrl.slice(typeOrUrl.lastIndexOf('/') + 1));
  return t.toObject(t.decode(body), { enums: String, longs: Number, defaults: false, oneofs: true }) as Record<string, unknown>;
}
