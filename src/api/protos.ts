// Protocol definitions: Envoy's discovery service (from the protos @grpc/grpc-js-xds ships) for
// the gRPC plumbing, and weft's copies of Istio's workload-API messages for xDS resources.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { rootPath } from '../util/paths.ts';

const deps = join(dirname(createRequire(import.meta.url).resolve('@grpc/grpc-js-xds/package.json')), 'deps');
export const PROTO_DIRS = [rootPath('proto'), join(deps, 'envoy-api'), join(deps, 'xds'), join(deps, 'googleapis'), join(deps, 'protoc-gen-validate')];

export const TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const TYPE_AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization';

const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
/** How messages of the ADS service are turned into objects (what @grpc/proto-loader was given). */
const ADS_OBJECTS: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, oneofs: true };
/**
 * Imports that only declare custom options (validation rules, versioning and status annotations)
 * and the descriptor.proto they extend. protobufjs keeps such options unresolved, and nothing
 * reads them, so they are not loaded.
 */
export const OPTION_ONLY = /^(?:validate|udpa\/annotations|xds\/annotations|envoy\/annotations)\/|^google\/protobuf\/descriptor\.proto$/;

/**
 * The same definitions in a root rebuilt from their JSON form. The parser's names and option values
 * are slices of each .proto file's text, so a parsed root keeps every file it read whole in the heap
 * (about 1 MB for the Envoy messages); the rebuilt root holds copies of the strings only. Comments
 * are not kept (nothing reads them). Call before any type is used: lookups resolve in the new root.
 */
export function compactRoot(root: protobuf.Root): protobuf.Root {
  return protobuf.Root.fromJSON(JSON.parse(JSON.stringify(root.toJSON())) as protobuf.INamespace);
}

/**
 * ads.proto and the files it needs: discovery.proto, envoy/config/core/v3/base.proto (Node) with
 * its imports, google/rpc/status.proto (about a dozen files, no descriptor set). Imports resolve
 * against the proto directories; google/protobuf/* are protobufjs built-ins.
 */
function loadAdsRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (OPTION_ONLY.test(target) ? null : PROTO_DIRS.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target) as string;
  root.loadSync('envoy/service/discovery/v3/ads.proto', { keepCase: false });
  const compact = compactRoot(root);
  compact.resolveAll();
  return compact;
}

/** A gRPC method definition that serializes like @grpc/proto-loader's (fromObject/encode, decode/toObject). */
function methodDefinition(service: string, method: protobuf.Method): grpc.MethodDefinition<object, object> {
  // A Buffer is a message already encoded (the Delta server writes its responses from cached bytes).
  const serialize = (t: protobuf.Type) => (obj: object) => {
    if (Buffer.isBuffer(obj)) return obj;
    const out = t.encode(t.fromObject(obj)).finish(); // a Buffer on Node
    return Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  };
  const deserialize = (t: protobuf.Type) => (buf: Buffer) => t.toObject(t.decode(buf), ADS_OBJECTS);
  const req = method.resolvedRequestType!;
  const res = method.resolvedResponseType!;
  return {
    path: `/${service}/${method.name}`,
    requestStream: !!method.requestStream,
    responseStream: !!method.responseStream,
    requestSerialize: serialize(req),
    requestDeserialize: deserialize(req),
    responseSerialize: serialize(res),
    responseDeserialize: deserialize(res),
    originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
  };
}

let ads: grpc.GrpcObject | undefined;
/**
 * The envoy.service.discovery.v3 package, loaded once. It holds the AggregatedDiscoveryService
 * (DeltaAggregatedResources, StreamAggregatedResources) and no message type definitions.
 */
export function adsPackage(): grpc.GrpcObject {
  if (!ads) {
    const service = loadAdsRoot().lookupService(ADS_SERVICE);
    const def: grpc.ServiceDefinition = Object.fromEntries(service.methodsArray.map((m) => [m.name, methodDefinition(ADS_SERVICE, m)]));
    ads = grpc.loadPackageDefinition({ [ADS_SERVICE]: def });
  }
  return ads;
}

export function adsService(): grpc.ServiceClientConstructor {
  const v3 = (((adsPackage().envoy as grpc.GrpcObject).service as grpc.GrpcObject).discovery as grpc.GrpcObject).v3 as grpc.GrpcObject;
  return v3.AggregatedDiscoveryService as grpc.ServiceClientConstructor;
}

let messages: protobuf.Root | undefined;
/** Istio workload-API message types, for encoding resources into google.protobuf.Any. */
export function meshTypes(): { Address: protobuf.Type; Authorization: protobuf.Type } {
  if (!messages) {
    const parsed = new protobuf.Root();
    // Imports resolve against the proto directories; google/protobuf/* are protobufjs built-ins.
    parsed.resolvePath = (_origin, target) => PROTO_DIRS.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
    parsed.loadSync(['istio/workload/workload.proto', 'istio/security/authorization.proto'], { keepCase: false });
    messages = compactRoot(parsed);
  }
  return { Address: messages.lookupType('istio.workload.Address'), Authorization: messages.lookupType('istio.security.Authorization') };
}

/**
 * A google.protobuf.Any for messages serialized by the loaded ADS service. protobufjs's Any
 * wrapper reads `type_url` whatever the loader's keepCase says; `typeUrl` would be dropped.
 */
export const anyMessage = (typeUrl: string, body: Uint8Array) => ({ type_url: typeUrl, value: Buffer.from(body) });
