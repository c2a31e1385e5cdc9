import { describe, expect, it } from 'vitest';
import { formatAuthority, parseAuthority } from '../../src/hbone/authority.ts';

describe('CONNECT authority', () => {
  it('accepts literal ip:port only', () => {
    expect(parseAuthority('10.1.2.3:8080')).toEqual({ address: '10.1.2.3', port: 8080 });
    expect(parseAuthority('[fd00::1]:443')).toEqual({ address: 'fd00::1', port: 443 });
    for (const bad of [undefined, '', '10.1.2.3', '10.1.2.3:0', '10.1.2.3:65536', 'fd00::1:443', '[10.1.2.3]:80', 'cart.shop.svc:80', '[fd00::1]', '10.1.2.3:80x', ' 10.1.2.3:80']) {
      expect(parseAuthority(bad), String(bad)).toBeUndefined();
    }
  });
  it('reads any IPv6 spelling as the one text sockets and the workload API use', () => {
    expect(parseAuthority('[FD00:0010:0244:0001:0:0:0:2]:80')).toEqual({ address: 'fd00:10:244:1::2', port: 80 });
    expect(parseAuthority('[::ffff:10.244.1.2]:80')).toEqual({ address: '10.244.1.2', port: 80 });
    expect(parseAuthority('[::ffff:af4:102]:80')).toEqual({ address: '10.244.1.2', port: 80 });
    expect(parseAuthority('[fe80::1%eth0]:80')).toBeUndefined();
  });
  it('refuses an IPv6 zone identifier (Node\'s isIPv6 takes one; found by test/fuzz/authority.test.ts)', () => {
    for (const bad of ['[fe80::1%eth0]:80', '[fe80::1%1]:443']) expect(parseAuthority(bad), bad).toBeUndefined();
  });
  it('round-trips through formatAuthority', () => {
    for (const a of ['10.1.2.3:8080', '[fd00::1]:443']) expect(formatAuthority(parseAuthority(a)!)).toBe(a);
  });
});
