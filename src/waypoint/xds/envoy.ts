// The Envoy v3 messages a waypoint reads (Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment, HttpConnectionManager), decoded from the protos @grpc/grpc-js-xds ships.
// The control plane has its own encoder (src/control/xds/envoy/messages.ts); a service may not import
// another, so the waypoint loads the same files for decoding.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { PROTO_DIRS } from '../../api/protos.ts';

export const TYPE_LISTENER = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const TYPE_ROUTE = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const TYPE_CLUSTER = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const TYPE_ENDPOINT = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
export const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

const FILES = [
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
];

let root: protobuf.Root | undefined;
function envoyRoot(): protobuf.Root {
  if (!root) {
    // google/protobuf/descriptor.proto (imported by the annotation protos) ships with protobufjs.
    const dirs = [...PROTO_DIRS, dirname(createRequire(import.meta.url).resolve('protobufjs/package.json'))];
    const r = new protobuf.Root();
    r.resolvePath = (_origin, target) => dirs.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
    r.loadSync(FILES, { keepCase: false });
    root = r;
  }
  return root;
}

const types = new Map<string, protobuf.Type>();
function envoyType(name: string): protobuf.Type {
  let t = types.get(name);
  if (!t) types.set(name, (t = envoyRoot().lookupType(name)));
  return t;
}

export type Msg = Record<string, unknown>;

/** A message by its type name or URL as a plain object (camelCase, enums by name); throws when the bytes do not decode. */
export function decodeEnvoy(typeOrUrl: string, body: Uint8Array): Msg {
  const t = envoyType(typeOrUrl.slice(typeOrUrl.lastIndexOf('/') + 1));
  return t.toObject(t.decode(body), { enums: String, longs: Number, defaults: false, oneofs: true }) as Msg;
}

/** SotW responses do not name their resources: the name inside the body. */
export function envoyNameOf(typeUrl: string): (body: Uint8Array) => string {
  return (body) => {
    const m = decodeEnvoy(typeUrl, body);
    return String(m.name ?? m.clusterName ?? '');
  };
}
