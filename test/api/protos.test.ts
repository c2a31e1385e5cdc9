// The ADS service weft builds from a slim protobufjs root must put the same bytes on the wire, and
// hand handlers the same objects, as the definition @grpc/proto-loader built from the full tree.
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { describe, expect, it } from 'vitest';
import { adsPackage, adsService, anyMessage, PROTO_DIRS, TYPE_ADDRESS } from '../../src/api/protos.ts';

const loaded = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: PROTO_DIRS });
const reference = loaded['envoy.service.discovery.v3.AggregatedDiscoveryService'] as grpc.ServiceDefinition;

const node = {
  id: 'node-0',
  cluster: 'weft',
  metadata: { fields: { NAMESPACE: { stringValue: 'mesh' }, PORTS: { listValue: { values: [{ numberValue: 8080 }] } }, READY: { boolValue: true } } },
  dynamicParameters: { a: { params: { k: 'v' } } },
  locality: { region: 'r', zone: 'z', subZone: 's' },
  userAgentName: 'weft',
  userAgentBuildVersion: { version: { majorNumber: 1, minorNumber: 2, patch: 3 } },
  extensions: [{ name: 'e', category: 'c', typeUrls: ['t'], disabled: true }],
  clientFeatures: ['envoy.lb.does_not_support_overprovisioning'],
  listeningAddresses: [{ socketAddress: { address: '10.0.0.1', portValue: 15008, protocol: 'UDP' } }],
};
const body = Buffer.from([0x0a, 0x03, 0x61, 0x62, 0x63]);
const messages: Record<'request' | 'response', Record<string, object[]>> = {
  request: {
    DeltaAggregatedResources: [
      {},
      { node, typeUrl: TYPE_ADDRESS, resourceNamesSubscribe: ['a', 'b'], resourceNamesUnsubscribe: ['c'], initialResourceVersions: { a: '1' }, responseNonce: 'n1' },
      { typeUrl: TYPE_ADDRESS, responseNonce: 'n2', errorDetail: { code: 3, message: 'bad', details: [anyMessage('type.googleapis.com/x.Y', body)] } },
    ],
    StreamAggregatedResources: [{ node, versionInfo: '7', resourceNames: ['l1'], typeUrl: 'type.googleapis.com/envoy.config.listener.v3.Listener', responseNonce: 'n', errorDetail: { code: 13, message: 'm' } }],
  },
  response: {
    DeltaAggregatedResources: [
      { systemVersionInfo: 'v', resources: [{ name: 'a', version: '3', resource: anyMessage(TYPE_ADDRESS, body), aliases: ['x'], ttl: { seconds: '5', nanos: 1 } }], typeUrl: TYPE_ADDRESS, removedResources: ['b'], nonce: '9' },
    ],
    StreamAggregatedResources: [{ versionInfo: '1', resources: [anyMessage(TYPE_ADDRESS, body)], canary: true, typeUrl: TYPE_ADDRESS, nonce: '2', controlPlane: { identifier: 'weft' } }],
  },
};

describe('ADS service definition', () => {
  const slim = adsService().service;

  it('has both streaming methods under their gRPC paths', () => {
    expect(Object.keys(slim).sort()).toEqual(Object.keys(reference).sort());
    for (const [name, m] of Object.entries(slim)) {
      const r = reference[name]!;
      expect([m.path, m.requestStream, m.responseStream, m.originalName]).toEqual([r.path, r.requestStream, r.responseStream, r.originalName]);
    }
    expect(adsPackage().envoy).toBeDefined();
  });

  for (const dir of ['request', 'response'] as const) {
    it(`serializes and deserializes ${dir}s like @grpc/proto-loader`, () => {
      for (const [name, objects] of Object.entries(messages[dir])) {
        const [m, r] = [slim[name]!, reference[name]!];
        const [ser, refSer] = dir === 'request' ? [m.requestSerialize, r.requestSerialize] : [m.responseSerialize, r.responseSerialize];
        const [de, refDe] = dir === 'request' ? [m.requestDeserialize, r.requestDeserialize] : [m.responseDeserialize, r.responseDeserialize];
        for (const obj of objects) {
          const bytes = ser(obj);
          expect(Buffer.isBuffer(bytes)).toBe(true);
          expect(bytes.equals(refSer(obj))).toBe(true);
          expect(de(bytes)).toEqual(refDe(bytes));
        }
      }
    });
  }

  it('keeps the Any type URL a resource was sent with', () => {
    const m = slim.DeltaAggregatedResources!;
    const out = m.responseDeserialize(m.responseSerialize({ resources: [{ name: 'a', resource: anyMessage(TYPE_ADDRESS, body) }] })) as { resources: { resource: { type_url: string; value: Buffer } }[] };
    expect(out.resources[0]!.resource.type_url).toBe(TYPE_ADDRESS);
    expect(Buffer.from(out.resources[0]!.resource.value).equals(body)).toBe(true);
  });
});
