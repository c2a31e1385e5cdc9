// The Envoy messages of src/api/envoy.ts come from a root that skips the option-only imports and is
// rebuilt from its JSON form (compactRoot, so the .proto files' text is not kept). It must describe
// the same wire as the whole tree parsed from the .proto files: every message and enum with the
// same fields, numbers, types and values, and the same bytes and objects for real resources.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { decodeEnvoy, ENVOY_FILES as FILES, envoyType, HCM, HTTP_PROTOCOL_OPTIONS } from '../../src/api/envoy.ts';
import { PROTO_DIRS } from '../../src/api/protos.ts';


/** The whole tree as protobufjs parses it, annotations and google/protobuf/descriptor.proto included. */
function parsedTree(): protobuf.Root {
  const dirs = [...PROTO_DIRS, dirname(createRequire(import.meta.url).resolve('protobufjs/package.json'))];
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => dirs.map((d) => join(d, target)).find((p) => existsSync(p)) ?? target;
  r.loadSync(FILES, { keepCase: false });
  r.resolveAll();
  return r;
}

function* all(ns: protobuf.NamespaceBase): Generator<protobuf.ReflectionObject> {
  for (const o of ns.nestedArray) {
    yield o;
    if (o instanceof protobuf.Namespace || o instanceof protobuf.Type) yield* all(o);
  }
}

/** What of a message or enum reaches the wire. */
function shape(o: protobuf.ReflectionObject): unknown {
  if (o instanceof protobuf.Enum) return { enum: o.values };
  if (!(o instanceof protobuf.Type)) return undefined;
  return {
    fields: o.fieldsArray.map((f) => {
      f.resolve();
      return {
        name: f.name, id: f.id, type: f.resolvedType?.fullName ?? f.type, repeated: f.repeated, packed: f.repeated && f.packed,
        map: f instanceof protobuf.MapField ? f.keyType : undefined, oneof: f.partOf?.name, optional: f.optional, required: f.required,
        delimited: !!f.delimited, hasPresence: !!f.hasPresence,
      };
    }),
    oneofs: o.oneofsArray.map((x) => [x.name, x.oneof]),
  };
}

// google/protobuf/descriptor.proto and the option-only imports, which the Envoy root skips.
const OPTIONS_ONLY = /^\.(validate|udpa\.annotations|xds\.annotations|envoy\.annotations)\.|^\.google\.protobuf\.(FileDescriptor|DescriptorProto|FieldDescriptor|OneofDescriptor|EnumDescriptor|EnumValueDescriptor|ServiceDescriptor|MethodDescriptor|SourceCodeInfo|GeneratedCodeInfo|UninterpretedOption|FeatureSet|\w*Options(\.|$)|Edition$|ExtensionRangeOptions|SymbolVisibility)/;

describe('Envoy messages (src/api/envoy.ts)', () => {
  const tree = parsedTree();
  const slim = envoyType('envoy.config.cluster.v3.Cluster').root;

  it('describe every message and enum of the parsed tree the same, leaving out only option declarations', () => {
    let compared = 0;
    const missing: string[] = [];
    for (const o of all(tree)) {
      if (!(o instanceof protobuf.Type) && !(o instanceof protobuf.Enum)) continue;
      const mine = slim.lookup(o.fullName);
      if (!mine) {
        missing.push(o.fullName);
        continue;
      }
      expect(shape(mine), o.fullName).toEqual(shape(o));
      compared++;
    }
    expect(missing.filter((n) => !OPTIONS_ONLY.test(n))).toEqual([]);
    expect(compared).toBeGreaterThan(300);
  });

  const any = (typeUrl: string, t: string, obj: object) => {
    const type = tree.lookupType(t);
    return { typeUrl, value: type.encode(type.fromObject(obj)).finish() };
  };
  const samples: [string, object][] = [
    ['envoy.config.cluster.v3.Cluster', {
      name: 'outbound|80||web.shop.svc.cluster.local', type: 'EDS', edsClusterConfig: { edsConfig: { ads: {}, resourceApiVersion: 'V3' } },
      connectTimeout: { seconds: 10 }, lbPolicy: 'LEAST_REQUEST', circuitBreakers: { thresholds: [{ maxConnections: { value: 5 }, maxPendingRequests: { value: 7 }, maxRetries: { value: 3 } }] },
      outlierDetection: { consecutive_5xx: { value: 3 }, interval: { seconds: 1 }, baseEjectionTime: { nanos: 5e8 }, maxEjectionPercent: { value: 50 } },
      typedExtensionProtocolOptions: { [HTTP_PROTOCOL_OPTIONS]: any(`type.googleapis.com/${HTTP_PROTOCOL_OPTIONS}`, HTTP_PROTOCOL_OPTIONS, { explicitHttpConfig: { http2ProtocolOptions: {} } }) },
      metadata: { filterMetadata: { istio: { fields: { services: { listValue: { values: [{ stringValue: 'web' }] } } } } } },
    }],
    ['envoy.config.route.v3.RouteConfiguration', {
      name: 'web.shop.svc.cluster.local:80',
      virtualHosts: [{
        name: 'web', domains: ['*'],
        routes: [
          { match: { prefix: '/v2', headers: [{ name: 'x-user', stringMatch: { exact: 'jason' } }], queryParameters: [{ name: 'q', presentMatch: true }] },
            route: { weightedClusters: { clusters: [{ name: 'a', weight: { value: 90 } }, { name: 'b', weight: { value: 10 } }] }, timeout: { seconds: 3 }, retryPolicy: { retryOn: '5xx,connect-failure', numRetries: { value: 2 }, perTryTimeout: { nanos: 25e7 } }, prefixRewrite: '/' },
            requestHeadersToAdd: [{ header: { key: 'x-a', value: 'b' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }] },
          { match: { safeRegex: { regex: '^/r/[0-9]+$' } }, redirect: { hostRedirect: 'example.com', responseCode: 'TEMPORARY_REDIRECT' } },
          { match: { path: '/d' }, directResponse: { status: 418, body: { inlineString: 'teapot' } } },
        ],
      }],
    }],
    ['envoy.config.listener.v3.Listener', {
      name: 'main', address: { socketAddress: { address: '0.0.0.0', portValue: 15008 } },
      filterChains: [{ filters: [{ name: 'hcm', typedConfig: any(`type.googleapis.com/${HCM}`, HCM, { statPrefix: 'x', rds: { routeConfigName: 'r', configSource: { ads: {} } }, httpFilters: [{ name: 'envoy.filters.http.router' }] }) }] }],
    }],
    ['envoy.config.endpoint.v3.ClusterLoadAssignment', {
      clusterName: 'c', endpoints: [{ locality: { zone: 'z' }, lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '10.0.0.1', portValue: 8080 } } }, healthStatus: 'HEALTHY', loadBalancingWeight: { value: 2 } }] }],
    }],
  ];

  it('encode and decode real resources to the same bytes and objects as the parsed tree', () => {
    for (const [name, obj] of samples) {
      const ref = tree.lookupType(name);
      const mine = envoyType(name);
      const bytes = mine.encode(mine.fromObject(obj)).finish();
      const refBytes = ref.encode(ref.fromObject(obj)).finish();
      expect(bytes.length, name).toBeGreaterThan(20);
      expect(Buffer.from(bytes).equals(Buffer.from(refBytes)), name).toBe(true);
      expect(decodeEnvoy(name, refBytes)).toEqual(ref.toObject(ref.decode(refBytes), { enums: String, longs: Number, defaults: false, oneofs: true }));
    }
  });
});
