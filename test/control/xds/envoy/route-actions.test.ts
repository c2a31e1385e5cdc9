// HTTPRoute/GRPCRoute filters and matches and VirtualService actions and matches, as the Envoy
// RouteConfiguration the control plane writes (decoded back), and the problems for what weft does
// not support, naming the object and field.
import { describe, expect, it } from 'vitest';
import type { KObject, Service } from '../../../../src/kube/objects.ts';
import { parseNetworking } from '../../../../src/control/model/networking/config.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { gateway, istio, NS } from './harness.ts';

type R = Record<string, unknown> & { name: string; match: Record<string, unknown> };
const svc = (name: string, port = 80): Service => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, ports: [{ port }] } });
const FQ = (name: string) => `${name}.${NS}.svc.cluster.local`;
const CL = (name: string, port = 80, subset = '') => `outbound|${port}|${subset}|${FQ(name)}`;

/** Drops the oneof discriminators the decoder adds (`pathSpecifier: 'prefix'` beside `prefix`). */
function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (!v || typeof v !== 'object' || v instanceof Uint8Array) return v;
  const o = v as Record<string, unknown>;
  return Object.fromEntries(Object.entries(o).filter(([k, x]) => !(typeof x === 'string' && x !== k && Object.hasOwn(o, x))).map(([k, x]) => [k, plain(x)]));
}

function routes(objects: KObject[], host = 'a', port = 80): { routes: R[]; rc: Record<string, unknown> } {
  const built = buildEnvoyResources([svc('a'), svc('b'), svc('g', 50051), ...objects], DEFAULT_MESH);
  expect(built.problems).toEqual([]);
  const rc = plain(decode(TYPE_ROUTE, built.resources.get(TYPE_ROUTE)!.get(`${FQ(host)}:${port}`)!)) as { virtualHosts: { routes: R[] }[] };
  return { routes: rc.virtualHosts[0]!.routes, rc };
}
const problems = (objects: KObject[]) => parseNetworking(objects, DEFAULT_MESH).problems.map((p) => `${p.kind}/${p.name}: ${p.field}: ${p.reason}`);
const http = (rules: object[]) => gateway('HTTPRoute', 'hr', { parentRefs: [{ group: '', kind: 'Service', name: 'a', port: 80 }], rules });
const vs = (http: object[]) => istio('VirtualService', 'vs', { hosts: ['a'], http });

describe('route actions into Envoy routes', () => {
  it('HTTPRoute: query, method and header matches; header modifiers at rule and backend level', () => {
    const { routes: rs } = routes([http([{
      matches: [{ path: { type: 'Exact', value: '/x' }, method: 'PUT', headers: [{ type: 'RegularExpression', name: 'X-User', value: 'a.+' }], queryParams: [{ name: 'v', value: '2' }, { type: 'RegularExpression', name: 'w', value: '[0-9]+' }] }],
      filters: [
        { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-Set', value: 's' }], add: [{ name: 'x-add', value: 'a' }], remove: ['x-rm'] } },
        { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'x-r', value: 'r' }], remove: ['server'] } },
      ],
      backendRefs: [
        { name: 'a', port: 80, weight: 1, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-backend', value: 'a' }] } }] },
        { name: 'b', port: 80, weight: 1 },
      ],
    }])]);
    const r = rs[0]!;
    expect(r.match).toEqual({
      path: '/x',
      headers: [{ name: ':method', stringMatch: { exact: 'PUT' } }, { name: 'x-user', stringMatch: { safeRegex: { regex: 'a.+' } } }],
      queryParameters: [{ name: 'v', stringMatch: { exact: '2' } }, { name: 'w', stringMatch: { safeRegex: { regex: '[0-9]+' } } }],
    });
    expect(r.requestHeadersToAdd).toEqual([
      { header: { key: 'x-set', value: 's' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-add', value: 'a' } }, // APPEND_IF_EXISTS_OR_ADD is the default (0)
    ]);
    expect(r.requestHeadersToRemove).toEqual(['x-rm']);
    expect(r.responseHeadersToAdd).toEqual([{ header: { key: 'x-r', value: 'r' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }]);
    expect(r.responseHeadersToRemove).toEqual(['server']);
    const wc = (r.route as { weightedClusters: { clusters: Record<string, unknown>[] } }).weightedClusters.clusters;
    expect(wc[0]).toMatchObject({ name: CL('a'), requestHeadersToAdd: [{ header: { key: 'x-backend', value: 'a' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }] });
    expect(wc[1]!.requestHeadersToAdd).toBeUndefined();
  });

  it('HTTPRoute: RequestRedirect, URLRewrite and RequestMirror', () => {
    const { routes: rs } = routes([http([
      { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', hostname: 'example.com', statusCode: 301, path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/full' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { port: 8080, path: { type: 'ReplaceFullPath', replaceFullPath: '/x' } } }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/strip/' } }], filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'h.example', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/' } } }], backendRefs: [{ name: 'a', port: 80 }] },
      { matches: [{ path: { type: 'PathPrefix', value: '/p' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/q' } } }], backendRefs: [{ name: 'a', port: 80 }] },
      { matches: [{ path: { type: 'Exact', value: '/rf' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/a\\b' } } }], backendRefs: [{ name: 'a', port: 80 }] },
      { matches: [{ path: { type: 'Exact', value: '/mirror' } }], filters: [
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'b', port: 80 }, percent: 25 } },
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'b', port: 80 }, fraction: { numerator: 1, denominator: 3 } } },
      ], backendRefs: [{ name: 'a', port: 80 }] },
    ])]);
    const by = (p: string) => rs.find((r) => r.match.prefix === p || r.match.path === p)!;
    // A PathPrefix is whole segments: the exact path, then the prefix with its separator.
    expect(rs.map((r) => r.match.path ?? r.match.prefix)).toEqual(['/mirror', '/rf', '/strip', '/strip/', '/full', '/full/', '/old', '/old/', '/p', '/p/']);
    expect(by('/old').redirect).toEqual({ schemeRedirect: 'https', hostRedirect: 'example.com', portRedirect: 443, prefixRewrite: '/new' }); // 301: MOVED_PERMANENTLY, the default
    expect(by('/old/').redirect).toMatchObject({ prefixRewrite: '/new/' });
    expect(by('/old').route).toBeUndefined();
    expect(by('/full').redirect).toEqual({ portRedirect: 8080, pathRedirect: '/x', responseCode: 'FOUND' });
    expect(by('/strip').route).toMatchObject({ cluster: CL('a'), hostRewriteLiteral: 'h.example', prefixRewrite: '/' });
    expect(by('/strip/').route).toMatchObject({ cluster: CL('a'), hostRewriteLiteral: 'h.example', prefixRewrite: '/' });
    expect(by('/p').route).toMatchObject({ prefixRewrite: '/q' });
    expect(by('/p/').route).toMatchObject({ prefixRewrite: '/q/' });
    expect(by('/rf').route).toMatchObject({ regexRewrite: { pattern: { regex: '^/.*$' }, substitution: '/a\\\\b' } });
    expect((by('/mirror').route as Record<string, unknown>).requestMirrorPolicies).toEqual([
      { cluster: CL('b'), runtimeFraction: { defaultValue: { numerator: 250_000, denominator: 'MILLION' } } },
      { cluster: CL('b'), runtimeFraction: { defaultValue: { numerator: 333_333, denominator: 'MILLION' } } },
    ]);
  });

  it('GRPCRoute: method matches as paths, header matches and filters', () => {
    const gr = gateway('GRPCRoute', 'gr', { parentRefs: [{ group: '', kind: 'Service', name: 'g', port: 50051 }], rules: [
      { matches: [{ method: { type: 'RegularExpression', service: 'pkg\\.v[0-9]+\\.Svc', method: 'Get.*' }, headers: [{ name: 'x-tenant', value: 't1' }] }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'x-from', value: 'gw' }] } }, { type: 'RequestMirror', requestMirror: { backendRef: { name: 'g', port: 50051 } } }],
        backendRefs: [{ name: 'g', port: 50051 }] },
    ] });
    const r = routes([gr], 'g', 50051).routes[0]!;
    expect(r.match).toEqual({ safeRegex: { regex: '/pkg\\.v[0-9]+\\.Svc/Get.*' }, headers: [{ name: 'x-tenant', stringMatch: { exact: 't1' } }] });
    expect(r.requestHeadersToAdd).toEqual([{ header: { key: 'x-from', value: 'gw' } }]);
    expect((r.route as Record<string, unknown>).requestMirrorPolicies).toEqual([{ cluster: CL('g', 50051), runtimeFraction: { defaultValue: { numerator: 1_000_000, denominator: 'MILLION' } } }]);
  });

  it('VirtualService: matches, redirect, directResponse, rewrite, headers and mirrors', () => {
    const { routes: rs, rc } = routes([vs([
      { name: 'm', match: [{ method: { exact: 'GET' }, authority: { prefix: 'a.' }, scheme: { exact: 'http' }, queryParams: { v: { regex: '[0-9]' }, t: {} }, uri: { prefix: '/M' }, ignoreUriCase: true, withoutHeaders: { 'x-b': {} } }], route: [{ destination: { host: 'a' } }] },
      { name: 'redir', match: [{ uri: { exact: '/r' } }], redirect: { uri: '/n', authority: 'x.example', scheme: 'https', derivePort: 'FROM_PROTOCOL_DEFAULT', redirectCode: 307 } },
      { name: 'redir-port', match: [{ uri: { exact: '/rp' } }], redirect: { port: 9090 } },
      { name: 'direct', match: [{ uri: { exact: '/d' } }], directResponse: { status: 503, body: { string: 'down' } } },
      { name: 'big', match: [{ uri: { exact: '/big' } }], directResponse: { status: 200, body: { bytes: Buffer.alloc(5000, 0xff).toString('base64') } } },
      { name: 'rw', match: [{ uri: { prefix: '/rw' } }], rewrite: { uri: '/', authority: 'other' }, headers: { request: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] }, response: { set: { 'x-d': '3' } } }, route: [{ destination: { host: 'a' }, headers: { request: { set: { 'x-dest': 'a' } } } }] },
      { name: 'rx', match: [{ uri: { prefix: '/rx' } }], rewrite: { uriRegexRewrite: { match: '^/rx/(.*)$', rewrite: '/\\1' } }, headers: { request: { set: { host: 'via-header' } } }, route: [{ destination: { host: 'a' } }], mirror: { host: 'b' }, mirrorPercentage: { value: 12.5 } },
      { name: 'mirrors', route: [{ destination: { host: 'a' } }], mirrors: [{ destination: { host: 'b', port: { number: 80 } }, percentage: { value: 0 } }, { destination: { host: 'a' } }] },
    ])]);
    const by = (n: string) => rs.find((r) => r.name === n)!;
    expect(by('m').match).toEqual({
      prefix: '/M', caseSensitive: {},  // BoolValue false decodes as {}
      headers: [
        { name: ':method', stringMatch: { exact: 'GET' } }, { name: ':authority', stringMatch: { prefix: 'a.' } }, { name: ':scheme', stringMatch: { exact: 'http' } },
        { name: 'x-b', presentMatch: true, invertMatch: true },
      ],
      queryParameters: [{ name: 'v', stringMatch: { safeRegex: { regex: '[0-9]' } } }, { name: 't', presentMatch: true }],
    });
    expect(by('redir').redirect).toEqual({ schemeRedirect: 'https', hostRedirect: 'x.example', portRedirect: 443, pathRedirect: '/n', responseCode: 'TEMPORARY_REDIRECT' });
    expect(by('redir-port').redirect).toEqual({ portRedirect: 9090 });
    expect(by('direct').directResponse).toEqual({ status: 503, body: { inlineString: 'down' } });
    expect((by('big').directResponse as { body: { inlineBytes: Uint8Array } }).body.inlineBytes).toHaveLength(5000);
    expect(rc.maxDirectResponseBodySizeBytes).toEqual({ value: 65536 });
    expect(by('rw').route).toMatchObject({ cluster: CL('a'), prefixRewrite: '/', hostRewriteLiteral: 'other' });
    expect(by('rw').requestHeadersToAdd).toEqual([
      { header: { key: 'x-a', value: '1' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-dest', value: 'a' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      { header: { key: 'x-b', value: '2' } },
    ]);
    expect(by('rw').requestHeadersToRemove).toEqual(['x-c']);
    expect(by('rw').responseHeadersToAdd).toEqual([{ header: { key: 'x-d', value: '3' }, appendAction: 'OVERWRITE_IF_EXISTS_OR_ADD' }]);
    expect(by('rx').route).toMatchObject({ regexRewrite: { pattern: { regex: '^/rx/(.*)$' }, substitution: '/\\1' }, hostRewriteLiteral: 'via-header', requestMirrorPolicies: [{ cluster: CL('b'), runtimeFraction: { defaultValue: { numerator: 125_000, denominator: 'MILLION' } } }] });
    expect(by('rx').requestHeadersToAdd).toBeUndefined();
    expect((by('mirrors').route as Record<string, unknown>).requestMirrorPolicies).toEqual([
      { cluster: CL('b'), runtimeFraction: { defaultValue: { denominator: 'MILLION' } } },
      { cluster: CL('a'), runtimeFraction: { defaultValue: { numerator: 1_000_000, denominator: 'MILLION' } } },
    ]);
  });

  it('reports what weft does not support, by object and field, and skips the object', () => {
    expect(problems([
      http([{ filters: [{ type: 'CORS', cors: {} }], backendRefs: [{ name: 'a', port: 80 }] }]),
    ])).toEqual(['HTTPRoute/hr: spec.rules[0].filters[0].type: CORS: not supported by weft (supported: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror)']);
    expect(problems([http([{ backendRefs: [{ name: 'a', port: 80, filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }])]))
      .toEqual(['HTTPRoute/hr: spec.rules[0].backendRefs[0].filters[0].type: RequestRedirect: only header modifiers are supported on a backendRef']);
    expect(problems([http([{ matches: [{ path: { type: 'Exact', value: '/e' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/x' } } }], backendRefs: [{ name: 'a', port: 80 }] }])]))
      .toEqual(['HTTPRoute/hr: spec.rules[0].filters: ReplacePrefixMatch needs PathPrefix matches']);
    expect(problems([http([{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: ':path', value: '/x' }] } }], backendRefs: [{ name: 'a', port: 80 }] }])]))
      .toEqual([expect.stringMatching(/^HTTPRoute\/hr: spec\.rules\[0\]\.filters\[0\]\.requestHeaderModifier\.set\.:path: pseudo-headers and Host cannot be modified/)]);
    expect(problems([http([{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 305 } }] }])])).toEqual([
      'HTTPRoute/hr: spec.rules[0].filters[0].requestRedirect.statusCode: expected 301, 302, 303, 307 or 308',
      'HTTPRoute/hr: spec.rules[0].backendRefs: a rule without backends (fail every request) is not supported: rule ignored',
    ]);
    expect(problems([gateway('GRPCRoute', 'gr', { parentRefs: [{ group: '', kind: 'Service', name: 'g' }], rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {} }], backendRefs: [{ name: 'g', port: 50051 }] }] })]))
      .toEqual([expect.stringMatching(/^GRPCRoute\/gr: spec\.rules\[0\]\.filters\[0\]\.type: URLRewrite: not supported by weft/)]);
    expect(problems([
      vs([{ redirect: { uri: '/x' }, route: [{ destination: { host: 'a' } }] }]),
      istio('VirtualService', 'v2', { hosts: ['b'], http: [{ directResponse: { status: 200, body: { string: 'x'.repeat(70_000) } } }] }),
      istio('VirtualService', 'v3', { hosts: ['b'], http: [{ route: [{ destination: { host: 'b' } }], rewrite: { uriRegexRewrite: { match: 'a'.repeat(2000), rewrite: '/' } } }] }),
      istio('VirtualService', 'v4', { hosts: ['b'], http: [{ route: [{ destination: { host: 'b' } }], mirror: { host: 'a' }, mirrors: [] }] }),
      istio('VirtualService', 'v5', { hosts: ['b'], http: [{ route: [{ destination: { host: 'b' } }], headers: { response: { set: { ':status': '500' } } } }] }),
      istio('VirtualService', 'v6', { hosts: ['b'], http: [{ match: [{ sourceLabels: { app: 'x' } }], route: [{ destination: { host: 'b' } }] }] }),
      istio('VirtualService', 'v7', { hosts: ['b'], http: [{ match: [{ headers: { 'x-id': { regex: '(a+)+$' } } }], route: [{ destination: { host: 'b' } }] }] }),
    ])).toEqual([
      'VirtualService/vs: spec.http[0].route: a rule with redirect cannot also route',
      'VirtualService/v2: spec.http[0].directResponse.body: larger than 65536 bytes',
      'VirtualService/v3: spec.http[0].rewrite.uriRegexRewrite: pattern and rewrite are limited to 1024 characters',
      'VirtualService/v4: spec.http[0].mirrors: mirror and mirrors cannot both be set',
      expect.stringMatching(/^VirtualService\/v5: spec\.http\[0\]\.headers\.response\.set\.:status: pseudo-headers/),
      'VirtualService/v6: spec.http[0].match[0].sourceLabels: match condition not supported by weft',
      'VirtualService/v7: spec.http[0].match[0].headers.x-id.regex: regular expression refused: a repeated group that itself repeats can backtrack exponentially',
    ]);
  });
});
