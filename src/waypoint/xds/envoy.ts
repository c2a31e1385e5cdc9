// The Envoy v3 messages a waypoint reads (Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment, HttpConnectionManager), decoded with the shared definitions in
// src/api/envoy.ts (the control plane encodes with the same ones).
import { decodeEnvoy as decode } from '../../api/envoy.ts';

export { HCM, HTTP_PROTOCOL_OPTIONS, TCP_PROXY, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../api/envoy.ts';

export type Msg = Record<string, unknown>;

/** A message by its type name or URL as a plain object (camelCase, enums by name); throws when the bytes do not decode. */
export const decodeEnvoy = (typeOrUrl: string, body: Uint8Array): Msg => decode(typeOrUrl, body);

/** SotW responses do not name their resources: the name inside the body. */
export function envoyNameOf(typeUrl: string): (body: Uint8Array) => string {
  return (body) => {
    const m = decodeEnvoy(typeUrl, body);
    return String(m.name ?? m.clusterName ?? '');
  };
}
