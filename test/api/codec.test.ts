// Addresses in the workload API are bytes; the agent compares them as text with what its sockets
// report. bytesToIp must therefore print exactly what Node prints for the same address (RFC 5952),
// or an IPv6 workload is never found by the address a connection carries.
import { SocketAddress } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bytesToIp, decodeAddress, encodeService, encodeWorkload, ipToBytes } from '../../src/api/codec.ts';
import type { Service, Workload } from '../../src/api/mesh.ts';

const hex = (s: string) => Buffer.from(s.replace(/[^0-9a-f]/gi, ''), 'hex');
const nodeText = (b: Uint8Array) => {
  const groups = Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16));
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
};

describe('bytesToIp (RFC 5952)', () => {
  it.each([
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['fd000010024400010000000000000002', 'fd00:10:244:1::2'],
    // the longest run wins, not the first
    ['00010000000200000000000000000003', '1:0:2::3'],
    ['00010000000000020000000000000003', '1:0:0:2::3'],
    // equal runs: the first one
    ['00010000000000020000000000030004', '1::2:0:0:3:4'],
    // a single zero group is not compressed
    ['00010000000200030004000500060007', '1:0:2:3:4:5:6:7'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    // no leading zeros, lowercase
    ['20010db800aa00000000000000000bcd', '2001:db8:aa::bcd'],
    // trailing run
    ['fe800000000000000000000000000000', 'fe80::'],
    // IPv4-mapped ends in a dotted quad
    ['00000000000000000000ffff0a000102', '::ffff:10.0.1.2'],
    ['00000000000000000000ffff00000000', '::ffff:0.0.0.0'],
    // not mapped: ffff elsewhere stays hex
    ['000000000000000000010000ffff0102', '::1:0:ffff:102'],
  ])('%s -> %s', (bytes, text) => {
    expect(bytesToIp(hex(bytes))).toBe(text);
  });

  it('prints IPv4 as a dotted quad and refuses other lengths', () => {
    expect(bytesToIp(Buffer.from([10, 244, 1, 2]))).toBe('10.244.1.2');
    expect(() => bytesToIp(Buffer.alloc(5))).toThrow(/5 bytes/);
  });

  it('agrees with Node on every address (what sockets report as remoteAddress)', () => {
    // Zero-heavy groups, so runs of every length and position are common.
    const group = fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
        const b = Buffer.alloc(16);
        groups.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
        const text = bytesToIp(b);
        expect(text).toBe(nodeText(b));
        expect(ipToBytes(text).equals(b)).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('ipToBytes', () => {
  it.each([
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['FD00:10:244:1::2', 'fd000010024400010000000000000002'],
    ['::ffff:10.0.1.2', '00000000000000000000ffff0a000102'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
  ])('%s', (text, bytes) => {
    expect(ipToBytes(text).toString('hex')).toBe(bytes);
  });

  it('refuses what is not a plain address', () => {
    for (const bad of ['', 'fd00::1/64', 'fe80::1%eth0', '1.2.3', 'example.com', ':::1']) expect(() => ipToBytes(bad)).toThrow(/not an IP address/);
  });

  it('round-trips any text form Node accepts', () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        expect(bytesToIp(ipToBytes(text))).toBe(new SocketAddress({ address: text, family: 'ipv6' }).address);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('workload addresses on the wire', () => {
  it('carries both families of a dual-stack pod, in order', () => {
    const w = { uid: 'Kubernetes//Pod/ns/p', name: 'p', namespace: 'ns', addresses: ['10.244.1.2', 'fd00:10:244:1::2'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: 'default', node: 'node-1', canonicalName: 'p', canonicalRevision: 'latest', workloadType: 'POD', workloadName: 'p', services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes' } satisfies Workload;
    const back = decodeAddress(encodeWorkload(w));
    expect('workload' in back && back.workload.addresses).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
  });
});

describe('waypoints on the wire (GatewayAddress)', () => {
  const w = { uid: 'Kubernetes//Pod/ns/p', name: 'p', namespace: 'ns', addresses: ['10.244.1.2'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: 'default', node: 'node-1', canonicalName: 'p', canonicalRevision: 'latest', workloadType: 'POD', workloadName: 'p', services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes' } satisfies Workload;
  const s = { name: 'web', namespace: 'ns', hostname: 'web.ns.svc.cluster.local', addresses: ['10.96.0.10'], ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [] } satisfies Service;
  const decodedWorkload = (x: Workload) => {
    const d = decodeAddress(encodeWorkload(x));
    if (!('workload' in d)) throw new Error('not a workload');
    return d.workload;
  };
  const decodedService = (x: Service) => {
    const d = decodeAddress(encodeService(x));
    if (!('service' in d)) throw new Error('not a service');
    return d.service;
  };

  it('a workload and a service carry their waypoint by address or by hostname', () => {
    const byAddress = { address: 'fd00:10:96::a', network: 'net-1', hboneMtlsPort: 15008 };
    const byHostname = { hostname: { namespace: 'ns', hostname: 'waypoint.ns.svc.cluster.local' }, hboneMtlsPort: 15008 };
    expect(decodedWorkload({ ...w, waypoint: byAddress }).waypoint).toEqual(byAddress);
    expect(decodedWorkload({ ...w, waypoint: byHostname }).waypoint).toEqual(byHostname);
    expect(decodedService({ ...s, waypoint: byAddress }).waypoint).toEqual(byAddress);
    expect(decodedService({ ...s, waypoint: byHostname }).waypoint).toEqual(byHostname);
  });

  it('no waypoint decodes as none, not as an empty one', () => {
    expect('waypoint' in decodedWorkload(w)).toBe(false);
    expect('waypoint' in decodedService(s)).toBe(false);
  });
});
