// Protocol definitions: Envoy's discovery service (from the protos @grpc/grpc-js-xds ships) for
// the gRPC plumbing, and weft's copies of Istio's workload-API messages for xDS resources.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const deps = join(dirname(createRequire(import.meta.url).resolve('@grpc/grpc-js-xds/package.json')), 'deps');
export const PROTO_DIRS = [join(root, 'proto'), join(deps, 'envoy-api'), join(deps, 'xds'), join(deps, 'googleapis'), join(deps, 'protoc-gen-validate')];

export const TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const TYPE_AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization';

const LOADER_OPTS: protoLoader.Options = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: PROTO_DIRS };

let ads: grpc.GrpcObject | undefined;
/** The envoy.service.discovery.v3 package (AggregatedDiscoveryService), loaded once. */
export function adsPackage(): grpc.GrpcObject {
  ads ??= grpc.loadPackageDefinition(protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', LOADER_OPTS));
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
    messages = new protobuf.Root();
    // Imports resolve against the proto directories; google/protobuf/* are protobufjs built-ins.
    messages.resolvePath = (_origin, target) => PROTO_DIRS.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
    messages.loadSync(['istio/workload/workload.proto', 'istio/security/authorization.proto'], { keepCase: false });
  }
  return { Address: messages.lookupType('istio.workload.Address'), Authorization: messages.lookupType('istio.security.Authorization') };
}

/**
 * A google.protobuf.Any for messages serialized by the loaded ADS service. protobufjs's Any
 * wrapper reads `type_url` whatever the loader's keepCase says; `typeUrl` would be dropped.
 */
export const anyMessage = (typeUrl: string, body: Uint8Array) => ({ type_url: typeUrl, value: Buffer.from(body) });
