// The map codecs (src/bpf/maps.ts) without a kernel: every captured connection's original
// destination goes through them, so they are written by hand for speed; these tests hold them to
// what Node's own parsers say (net.isIPv4, the address Node prints) and to a round trip.
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ipv4Octets, origDst, peerKey, unmapV4 } from '../../src/bpf/maps.ts';

const octet = fc.integer({ min: 0, max: 255 });

describe('ipv4Octets', () => {
  it('accepts exactly what net.isIPv4 accepts', () => {
    const near = fc.stringMatching(/^[0-9.]{0,18}$/); // digits and dots: where a hand parser slips
    fc.assert(
      fc.property(fc.oneof(near, fc.string(), fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'))), (s) => {
        expect(ipv4Octets(s) !== undefined).toBe(net.isIPv4(s));
      }),
      { numRuns: 20_000 },
    );
  });

  it('reads the octets', () => {
    fc.assert(
      fc.property(fc.tuple(octet, octet, octet, octet), (o) => {
        expect(ipv4Octets(o.join('.'))).toEqual(o);
      }),
    );
    for (const bad of ['', '1.2.3', '1.2.3.4.', '.1.2.3.4', '1..2.3', '01.2.3.4', '1.2.3.256', '1.2.3.1000', '1.2.3.4 ', '::1', '1.2.3.-4'])
      expect(ipv4Octets(bad), bad).toBeUndefined();
  });
});

describe('unmapV4', () => {
  it('unmaps v4-mapped IPv6, in any case, and leaves everything else', () => {
    expect(unmapV4('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(unmapV4('::FFFF:10.0.0.1')).toBe('10.0.0.1');
    for (const a of ['10.0.0.1', '::1', 'fd00::1', '::ffff:abcd', '::ffff:10.0.0.1x']) expect(unmapV4(a)).toBe(a);
  });
});

describe('endpoint codecs', () => {
  it('round-trip IPv4 and IPv6 endpoints as Node prints them', () => {
    const v4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
    const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).map((g) => {
      // Node's (and the kernel's) canonical text, via a real socket address parser.
      const sa = new net.SocketAddress({ address: g.map((x) => x.toString(16)).join(':'), family: 'ipv6' });
      return sa.address;
    });
    fc.assert(
      fc.property(fc.oneof(v4, v6), fc.integer({ min: 0, max: 65535 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.boolean(), (address, port, cookie, mapped) => {
        const v = { address, port, family: (address.includes(':') ? 6 : 4) as 4 | 6, v4Mapped: mapped, netnsCookie: cookie, cgroupId: cookie ^ 1n };
        expect(origDst.decode(origDst.encode(v))).toEqual(v);
        const k = { netnsCookie: cookie, client: { address, port } };
        expect(peerKey.decode(peerKey.encode(k))).toEqual({ netnsCookie: cookie, client: { ...k.client, family: v.family } });
      }),
      { numRuns: 2_000 },
    );
  });

  it('writes a v4-mapped client as IPv4, and refuses what is not an address', () => {
    const a = peerKey.encode({ netnsCookie: 1n, client: { address: '::ffff:10.1.2.3', port: 80 } });
    expect(a.equals(peerKey.encode({ netnsCookie: 1n, client: { address: '10.1.2.3', port: 80 } }))).toBe(true);
    for (const bad of ['', 'localhost', '10.1.2', '10.1.2.300'])
      expect(() => peerKey.encode({ netnsCookie: 1n, client: { address: bad, port: 80 } })).toThrow(/not an IP address/);
  });
});
