// DeltaDiscoveryResponse bytes, written directly. Each resource's wire form (name, version, the
// body in a google.protobuf.Any) is encoded once and kept with it, so a response to a new agent is
// a concatenation of cached bytes rather than 10,000 objects built and encoded per stream.
// Field numbers are envoy.service.discovery.v3's (discovery.proto).
import protobuf from 'protobufjs';
import type { Resource } from './resources.ts';

const LEN = 2; // wire type: length-delimited
const tag = (field: number) => (field << 3) | LEN;

/** envoy.service.discovery.v3.Resource: version = 1, resource (Any) = 2, name = 3. */
export function resourceWire(typeUrl: string, r: Resource): Uint8Array {
  if (!r.wire) {
    const w = protobuf.Writer.create();
    w.uint32(tag(1)).string(r.version);
    w.uint32(tag(2)).fork().uint32(tag(1)).string(typeUrl).uint32(tag(2)).bytes(r.body).ldelim();
    w.uint32(tag(3)).string(r.name);
    r.wire = w.finish();
  }
  return r.wire;
}

/** DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4, nonce = 5, removed_resources = 6. */
export function deltaResponse(m: { systemVersionInfo: string; typeUrl: string; nonce: string; resources: readonly Resource[]; removed: readonly string[] }): Buffer {
  const w = protobuf.Writer.create();
  w.uint32(tag(1)).string(m.systemVersionInfo);
  for (const r of m.resources) w.uint32(tag(2)).bytes(resourceWire(m.typeUrl, r));
  w.uint32(tag(4)).string(m.typeUrl);
  w.uint32(tag(5)).string(m.nonce);
  for (const n of m.removed) w.uint32(tag(6)).string(n);
  const out = w.finish();
  return Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}
