// The route actions as the waypoint compiles and applies them, apart from sockets: what it refuses
// (naming the field) instead of ignoring, Location built as Envoy's newUri builds it, rewrites
// (prefix of the match, RE2-style substitution, bounded output) and header changes in Envoy's order.
import { describe, expect, it } from 'vitest';
import { encode } from '../../../src/control/xds/envoy/messages.ts';
import { editHeaders, localAnswer, prepareUpstream, redirectLocation, MAX_REWRITTEN_PATH } from '../../../src/waypoint/router/actions.ts';
import { shadowHost } from '../../../src/waypoint/upstream/mirror.ts';
import { compileRouteConfig } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';

const RC = 'envoy.config.route.v3.RouteConfiguration';
const rc = (routes: object[], extra: object = {}) => compileRouteConfig(decodeEnvoy(RC, encode(RC, { name: 'web:80', virtualHosts: [{ name: 'web:80', domains: ['web'], routes }], ...extra })));
const one = (r: object, extra?: object) => rc([{ name: 'r', match: { prefix: '/' }, ...r }], extra).virtualHosts[0]!.routes[0]!;

describe('waypoint route actions: compile', () => {
  it('refuses, by field, what it cannot do', () => {
    const add = (key: string, value = 'v') => ({ route: { cluster: 'c' }, requestHeadersToAdd: [{ header: { key, value } }] });
    expect(() => one(add(':path'))).toThrow(/routes\[0\] \(r\)\.request_headers_to_add\[0\]\.header\.key: :path: pseudo-headers and host may not be modified/);
    expect(() => one(add('host'))).toThrow(/pseudo-headers and host/);
    expect(() => one(add('x-a', '%DOWNSTREAM_REMOTE_ADDRESS%'))).toThrow(/header value substitutions/);
    expect(one(add('x-a', '100%%')).requestHeaders!.add[0]!.value).toBe('100%');
    expect(() => one({ route: { cluster: 'c', hostRewriteHeader: 'x-host' } })).toThrow(/\.route\.host_rewrite_header: not supported/);
    expect(() => one({ route: { cluster: 'c', autoHostRewrite: { value: true } } })).toThrow(/auto_host_rewrite/);
    expect(() => one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: '(' }, substitution: '' } } })).toThrow(/regex_rewrite\.pattern/);
    expect(() => one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: 'a'.repeat(2000) }, substitution: '' } } })).toThrow(/longer than 1024/);
    // Hostile: shapes JavaScript's backtracking engine would take exponential time on (RE2 would not).
    expect(() => one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: '(a+)+$' }, substitution: '' } } })).toThrow(/regex_rewrite\.pattern: regex refused: a repeated group that itself repeats/);
    expect(() => rc([{ name: 'r', match: { safeRegex: { regex: '/(x*y)*' } }, route: { cluster: 'c' } }])).toThrow(/match\.safe_regex: regex refused/);
    expect(() => rc([{ name: 'r', match: { prefix: '/', headers: [{ name: 'x', safeRegexMatch: { regex: '(a)\\1' } }] }, route: { cluster: 'c' } }])).toThrow(/backreferences/);
    expect(() => one({ route: { cluster: 'c', requestMirrorPolicies: [{ clusterHeader: 'x' }] } })).toThrow(/request_mirror_policies\[0\]\.cluster: empty/);
    expect(() => one({ directResponse: { status: 200, body: { inlineString: 'x'.repeat(5000) } } })).toThrow(/5000 bytes, over max_direct_response_body_size_bytes \(4096\)/);
    expect(one({ directResponse: { status: 200, body: { inlineString: 'x'.repeat(5000) } } }, { maxDirectResponseBodySizeBytes: { value: 65536 } }).direct!.body!.length).toBe(5000);
    expect(() => one({ directResponse: { status: 99 } })).toThrow(/direct_response\.status: 99/);
    expect(() => rc([], { requestHeadersToAdd: [{ header: { key: 'x', value: 'y' } }] })).toThrow(/RouteConfiguration web:80\.request_headers_to_add: not supported/);
  });

  it('builds Location as Envoy does', () => {
    const loc = (r: object, url: string, host = 'web', xfp?: string) => {
      const route = one({ redirect: r });
      return redirectLocation(route.redirect!, { url, host, forwardedProto: xfp });
    };
    expect(loc({}, '/a?b=1')).toBe('http://web/a?b=1');
    expect(loc({ pathRedirect: '/new' }, '/old?q=1')).toBe('http://web/new?q=1'); // the request's query kept
    expect(loc({ pathRedirect: '/new?z=2' }, '/old?q=1')).toBe('http://web/new?z=2');
    expect(loc({ pathRedirect: '/new', stripQuery: true }, '/old?q=1')).toBe('http://web/new');
    expect(loc({ schemeRedirect: 'https' }, '/x', 'web:80')).toBe('https://web/x'); // the old default port goes
    expect(loc({ schemeRedirect: 'https' }, '/x', 'web:8080')).toBe('https://web:8080/x');
    expect(loc({ schemeRedirect: 'https', portRedirect: 443 }, '/x', 'web:8080')).toBe('https://web/x');
    expect(loc({ portRedirect: 8443 }, '/x', 'web:80')).toBe('http://web:8443/x');
    expect(loc({ hostRedirect: 'example.com' }, '/x', 'web:80')).toBe('http://example.com/x');
    expect(loc({ hostRedirect: 'example.com' }, '/x', 'web', 'https')).toBe('https://example.com/x');
    const prefix = rc([{ name: 'p', match: { prefix: '/old' }, redirect: { prefixRewrite: '/new', responseCode: 'PERMANENT_REDIRECT' } }]).virtualHosts[0]!.routes[0]!;
    expect(prefix.redirect!.code).toBe(308);
    expect(redirectLocation(prefix.redirect!, { url: '/old/x?y', host: 'web' })).toBe('http://web/new/x?y');
    const ans = localAnswer(prefix, { url: '/old/a', host: 'web', headers: {} })!;
    expect(ans).toMatchObject({ status: 308, headers: { location: 'http://web/new/a' } });
  });

  it('rewrites paths (matched prefix, regex with groups), bounded, and keeps the original path', () => {
    const prefix = rc([{ name: 'p', match: { prefix: '/api/' }, route: { cluster: 'c', prefixRewrite: '/' } }]).virtualHosts[0]!.routes[0]!;
    const h1: Record<string, string> = { host: 'web' };
    expect(prepareUpstream(prefix, 'c', '/api/v1/x?q', h1)!.url).toBe('/v1/x?q');
    expect(h1['x-envoy-original-path']).toBe('/api/v1/x?q');
    const regex = one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: '^/service/([^/]+)(/.*)$' }, substitution: '\\2/instance/\\1' } } });
    expect(prepareUpstream(regex, 'c', '/service/foo/v1/api?x=1', { host: 'web' })!.url).toBe('/v1/api/instance/foo?x=1');
    const hostile = one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: '' + '.' }, substitution: 'x'.repeat(1000) } } });
    expect(prepareUpstream(hostile, 'c', `/${'a'.repeat(100)}`, { host: 'web' })).toBeUndefined();
    const empty = one({ route: { cluster: 'c', regexRewrite: { pattern: { regex: 'z*' }, substitution: 'y'.repeat(1000) } } });
    expect(prepareUpstream(empty, 'c', `/${'a'.repeat(MAX_REWRITTEN_PATH - 1)}`, { host: 'web' })).toBeUndefined();
    const host = one({ route: { cluster: 'c', hostRewriteLiteral: 'other.example' } });
    const h2: Record<string, string> = { host: 'web' };
    prepareUpstream(host, 'c', '/', h2);
    expect(h2.host).toBe('other.example');
  });

  it('changes headers in Envoy order: removals, then additions; the cluster level before the route', () => {
    const route = one({
      route: { weightedClusters: { clusters: [{ name: 'a', weight: { value: 1 }, requestHeadersToAdd: [{ header: { key: 'x-level', value: 'cluster' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }] }] } },
      requestHeadersToAdd: [
        { header: { key: 'x-level', value: 'route' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        { header: { key: 'x-multi', value: 'two' } },
        { header: { key: 'x-absent', value: 'new' }, appendAction: 'ADD_IF_ABSENT' },
        { header: { key: 'x-present', value: 'new' }, appendAction: 'ADD_IF_ABSENT' },
        { header: { key: 'x-only-if', value: 'new' }, appendAction: 'OVERWRITE_IF_EXISTS' },
      ],
      requestHeadersToRemove: ['x-drop'],
      responseHeadersToAdd: [{ header: { key: 'x-resp', value: 'r' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
      responseHeadersToRemove: ['server'],
    });
    const h: Record<string, string | string[]> = { host: 'web', 'x-multi': 'one', 'x-present': 'old', 'x-drop': 'gone' };
    const up = prepareUpstream(route, 'a', '/', h)!;
    expect(h).toEqual({ host: 'web', 'x-level': 'route', 'x-multi': ['one', 'two'], 'x-absent': 'new', 'x-present': 'old' });
    const resp: Record<string, string> = { server: 'x' };
    up.response(resp);
    expect(resp).toEqual({ 'x-resp': 'r' });
    const empty: Record<string, string> = {};
    editHeaders(empty, { remove: [], add: [{ name: 'x', value: '', action: 'overwrite', keepEmpty: false }] });
    expect(empty).toEqual({});
  });

  it('suffixes the mirror authority with -shadow before the port, as Envoy', () => {
    expect(shadowHost('web')).toBe('web-shadow');
    expect(shadowHost('web.conf.svc:80')).toBe('web.conf.svc-shadow:80');
    expect(shadowHost('[::1]:80')).toBe('[::1]-shadow:80');
  });
});
