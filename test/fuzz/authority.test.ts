// CONNECT authorities (src/hbone/authority.ts) against the reference spec in
// ref-authority.ts.
import { describe, expect, it } from 'vitest';
import { formatAuthority, parseAuthority } from '../../src/hbone/authority.ts';
import { fuzz, testTimeout } from './fuzz.ts';
import { authorityArb, refAuthority } from './ref-authority.ts';

describe('fuzz: CONNECT authority', () => {
  it(
    'accepts an authority iff the reference spec does, with the same address and port',
    async () => {
      const { runs } = await fuzz('authority', authorityArb, (s) => {
        const got = parseAuthority(s);
        const want = refAuthority(s);
        expect(got, JSON.stringify(s)).toEqual(want);
        if (got) expect(parseAuthority(formatAuthority(got))).toEqual(got);
        return got ? (got.address.includes(':') ? 'v6' : 'v4') : 'refused';
      });
      expect(runs).toBeGreaterThan(0);
    },
    testTimeout('authority'),
  );

  // Found by this fuzzer: Node's isIPv6 takes a zone identifier, so `[fe80::1%eth0]:80` was
  // accepted and the server would have dialed a link-local address out of an interface the peer
  // names. ztunnel (Rust's SocketAddr) refuses zones in an authority; so do we.
  it('refuses an IPv6 zone identifier', () => {
    for (const s of ['[fe80::1%eth0]:80', '[fe80::1%1]:443', '[fd00::1%25lo]:80', '[::1%]:80']) expect(parseAuthority(s), s).toBeUndefined();
    expect(parseAuthority('[fe80::1]:80')).toEqual({ address: 'fe80::1', port: 80 });
  });
});
