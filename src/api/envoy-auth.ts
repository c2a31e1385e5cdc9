// Envoy's external authorization service, envoy.service.auth.v3.Authorization (Check: a
// CheckRequest describing one HTTP request, a CheckResponse allowing or denying it), from the protos
// @grpc/grpc-js-xds ships. The waypoint's ext_authz filter is its client; an authorizer (tests, the
// lab's) is its server. Loaded once, apart from the xDS messages (envoy.ts): only a waypoint with a
// CUSTOM policy needs it.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { compactRoot, OPTION_ONLY, PROTO_DIRS } from './protos.ts';

export const AUTHORIZATION_SERVICE = 'envoy.service.auth.v3.Authorization';
/** The gRPC method path of Check. */
export const AUTHORIZATION_CHECK = `/${AUTHORIZATION_SERVICE}/Check`;

let root: protobuf.Root | undefined;
function authRoot(): protobuf.Root {
  if (!root) {
    const r = new protobuf.Root();
    r.resolvePath = (_origin, target) => (OPTION_ONLY.test(target) ? null : PROTO_DIRS.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target) as string;
    r.loadSync('envoy/service/auth/v3/external_auth.proto', { keepCase: false });
    root = compactRoot(r);
    root.resolveAll();
  }
  return root;
}

/** A message of the service by its full name (envoy.service.auth.v3.CheckRequest, ...). */
export function authType(name: string): protobuf.Type {
  return authRoot().lookupType(name);
}

/** How the messages are turned into objects: camelCase fields, enums and int64 as numbers (an HttpStatus code is the status). */
const OBJECTS: protobuf.IConversionOptions = { longs: Number, defaults: false, bytes: Buffer };

export function encodeAuth(name: string, obj: Record<string, unknown>): Buffer {
  const t = authType(name);
  const out = t.encode(t.fromObject(obj)).finish();
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** Throws when the bytes are not the message. */
export function decodeAuth(name: string, body: Uint8Array): Record<string, unknown> {
  const t = authType(name);
  return t.toObject(t.decode(body), OBJECTS) as Record<string, unknown>;
}

/** The service for a grpc-js server or client: Check with CheckRequest and CheckResponse as plain objects. */
export function authorizationService(): grpc.ServiceDefinition {
  return {
    Check: {
      path: AUTHORIZATION_CHECK,
      requestStream: false,
      responseStream: false,
      requestSerialize: (o: Record<string, unknown>) => encodeAuth('envoy.service.auth.v3.CheckRequest', o),
      requestDeserialize: (b: Buffer) => decodeAuth('envoy.service.auth.v3.CheckRequest', b),
      responseSerialize: (o: Record<string, unknown>) => encodeAuth('envoy.service.auth.v3.CheckResponse', o),
      responseDeserialize: (b: Buffer) => decodeAuth('envoy.service.auth.v3.CheckResponse', b),
    },
  };
}
