// The path RBAC and routing see (inbound/normalize-path.ts): Envoy's normalize_path and
// merge_slashes, so the spellings of /admin all read as /admin; escaped slashes kept (Envoy's
// default KEEP_UNCHANGED); the query never touched; hostile paths bounded by their own length.
import { describe, expect, it } from 'vitest';
import { normalizePath, normalizeUrl } from '../../../src/waypoint/inbound/normalize-path.ts';
import { compileRbacHttp } from '../../../src/waypoint/filters/rbac/http.ts';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';
import type { FilterRequest } from '../../../src/waypoint/filters/chain.ts';
import { encodeHttp, pathExact, pathPrefix, policy, RBAC_HTTP, rbacConfig, orRules } from './rbac-fixtures.ts';

describe('path normalization', () => {
  it('decodes unreserved escapes, removes dot segments, merges slashes, reads backslashes as slashes', () => {
    const cases: [string, string][] = [
      ['/admin', '/admin'], ['/./admin', '/admin'], ['//admin', '/admin'], ['/%61dmin', '/admin'], ['/%2e%2E/admin', '/admin'],
      ['/a/../admin', '/admin'], ['/../../admin', '/admin'], ['/admin/.', '/admin/'], ['/admin/..', '/'], ['/a//b///c/', '/a/b/c/'],
      ['/a\\b', '/a/b'], ['/.hidden/..x', '/.hidden/..x'], ['/%7Euser', '/~user'], ['/a%20b', '/a%20b'], ['/%2Fadmin', '/%2Fadmin'], ['/%zz', '/%zz'], ['/%6', '/%6'],
    ];
    for (const [from, to] of cases) expect([from, normalizePath(from)]).toEqual([from, to]);
    expect(normalizeUrl('/a/./b?x=/../y&z=%61')).toBe('/a/b?x=/../y&z=%61');
    const plain = '/api/v1/items';
    expect(normalizePath(plain)).toBe(plain);
    expect(normalizeUrl('*')).toBe('*');
  });

  it('bounds its work by the path: thousands of segments and dots come back in one pass', () => {
    expect(normalizePath(`/${'../'.repeat(50_000)}admin`)).toBe('/admin');
    expect(normalizePath(`${'/'.repeat(100_000)}admin`)).toBe('/admin');
    expect(normalizePath(`/${'%2e/'.repeat(20_000)}admin`)).toBe('/admin');
  });

  it('so an RBAC DENY on /admin holds for every spelling once normalized', () => {
    const f = compileRbacHttp(decodeEnvoy(RBAC_HTTP, encodeHttp(rbacConfig('DENY', { d: policy([orRules(pathExact('/admin'), pathPrefix('/admin/'))]) }))), 'rbac')!;
    const at = (raw: string) => {
      const url = normalizeUrl(raw);
      const r = { method: 'GET', url, path: url.split('?')[0]!, host: 'web', scheme: 'http', protocol: 'HTTP/1.1', headers: {}, peerPrincipal: '', peerIp: '', peerAddress: '', destination: '1.1.1.1:80', grpc: false, metadata: new Map() } as FilterRequest;
      return (f.decode(r) as { status: number } | undefined)?.status;
    };
    for (const p of ['/admin', '/./admin', '//admin', '/%61dmin', '/x/../admin/', '/admin/./x', '/%2e/admin?q']) expect([p, at(p)]).toEqual([p, 403]);
    expect(at('/administrator')).toBeUndefined();
  });
});
