// The small encoders the resource builders share, over the Envoy v3 messages of src/api/envoy.ts
// (which the waypoint decodes with). Resources are encoded here, once per model build, so the ADS
// servers only ever copy bytes.
import { anyMessage } from '../../../api/protos.ts';
import { decodeEnvoy, envoyType } from '../../../api/envoy.ts';

export { ENVOY_TYPES, envoyType, HCM, HTTP_PROTOCOL_OPTIONS, TCP_PROXY, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../../api/envoy.ts';

/** Encodes a plain object (camelCase field names, enums by name) as the named message. */
export function encode(name: string, obj: Record<string, unknown>): Uint8Array {
  const t = envoyType(name);
  return t.encode(t.fromObject(obj)).finish();
}

export const decode = decodeEnvoy;

/** A google.protobuf.Any holding the named message (see anyMessage for the field spelling). */
export const any = (name: string, obj: Record<string, unknown> = {}) => anyMessage(`type.googleapis.com/${name}`, encode(name, obj));

export const duration = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) });

export const ADS_SOURCE = { ads: {}, resourceApiVersion: 'V3' };
