// Route matches and actions end to end (harness.ts: the real control plane from objects, the real
// waypoint, backends that echo what they saw): the matches Istio and the Gateway API allow, local
// answers (redirect with Envoy's Location, direct response) counted like any request, rewrites and
// header changes as the backend and the client see them, and mirrors that reach the other backend
// without ever holding up the main request. Hostile: a rewrite that would build a huge path.
import { afterEach, describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { MAX_IN_FLIGHT, mirrorsInFlight } from '../../src/waypoint/upstream/mirror.ts';
import { Cleanup, HOST, client, istio, metric, NS, stand, subsets, until, webPod, webService } from './harness.ts';

const base = () => [webService(), webPod('v1'), webPod('v2'), subsets()];
const gateway = (kind: string, name: string, spec: unknown): KObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind, metadata: { name, namespace: NS }, spec });
const parent = { group: '', kind: 'Service', name: 'web', port: 80 };
const web = { name: 'web', port: 80 };
const tag = (rule: string) => ({ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-rule', value: rule }] } });
const v1 = { destination: { host: 'web', subset: 'v1' } };
/** Until an asynchronous check holds (a config change reaching the waypoint), bounded. */
async function eventually(f: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('waypoint route actions', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('matches HTTPRoute paths, headers, query parameters and methods by Gateway API precedence', async () => {
    const route = gateway('HTTPRoute', 'web', {
      parentRefs: [parent],
      rules: [
        { matches: [{ path: { type: 'Exact', value: '/exact' } }], filters: [tag('exact')], backendRefs: [web] },
        { matches: [{ path: { type: 'RegularExpression', value: '/items/[0-9]+' } }], filters: [tag('regex')], backendRefs: [web] },
        { matches: [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }], filters: [tag('post')], backendRefs: [web] },
        { matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ type: 'RegularExpression', name: 'x-user', value: 'adm.n' }] }], filters: [tag('header')], backendRefs: [web] },
        { matches: [{ path: { type: 'PathPrefix', value: '/api' }, queryParams: [{ name: 'v', value: '2' }] }], filters: [tag('query')], backendRefs: [web] },
        { matches: [{ path: { type: 'PathPrefix', value: '/api' } }], filters: [tag('prefix')], backendRefs: [web] },
      ],
    });
    const s = await stand(cleanup, [...base(), route]);
    const c = client(cleanup, s);
    const rule = async (path: string, o: { method?: string; headers?: Record<string, string> } = {}) => {
      const before = s.v1.seen.length + s.v2.seen.length;
      const r = await c.request(path, o);
      if (r.status !== 200) return `${r.status}`;
      await until(() => s.v1.seen.length + s.v2.seen.length > before, 5000, 'the backend saw it');
      const seen = [...s.v1.seen, ...s.v2.seen].find((x) => x.url === path && x.method === (o.method ?? 'GET') && !('checked' in x))!;
      (seen as object as Record<string, boolean>).checked = true;
      return String(seen.headers['x-rule']);
    };
    expect(await rule('/exact')).toBe('exact');
    expect(await rule('/exact/more')).toBe('404');
    expect(await rule('/items/42')).toBe('regex');
    expect(await rule('/items/42x')).toBe('404');
    expect(await rule('/api/x', { method: 'POST' })).toBe('post');
    expect(await rule('/api/x', { headers: { 'x-user': 'admin' } })).toBe('header');
    expect(await rule('/api/x?v=2')).toBe('query');
    expect(await rule('/api/x?v=3')).toBe('prefix');
    expect(await rule('/api')).toBe('prefix');
    expect(await rule('/apix')).toBe('404'); // a PathPrefix is whole path segments
  }, 30_000);

  it('matches GRPCRoute methods (as /service/method paths) and headers', async () => {
    const route = gateway('GRPCRoute', 'web', {
      parentRefs: [parent],
      rules: [
        { matches: [{ method: { service: 'pkg.Echo', method: 'Say' }, headers: [{ name: 'x-tenant', value: 'blue' }] }], filters: [tag('blue')], backendRefs: [web] },
        { matches: [{ method: { type: 'RegularExpression', service: 'pkg\\.v[0-9]+\\.Echo', method: 'Get.*' } }], filters: [tag('regex')], backendRefs: [web] },
        { matches: [{ method: { service: 'pkg.Echo' } }], filters: [tag('service')], backendRefs: [web] },
      ],
    });
    const s = await stand(cleanup, [...base(), route]);
    const c = client(cleanup, s);
    const rule = async (path: string, headers: Record<string, string> = {}) => {
      const r = await c.request(path, { method: 'POST', headers: { 'content-type': 'application/grpc', ...headers }, body: Buffer.alloc(5) });
      if (r.status !== 200) return `${r.status}`;
      return String([...s.v1.seen, ...s.v2.seen].find((x) => x.url === path && !(x as { checked?: boolean }).checked && ((x as { checked?: boolean }).checked = true))!.headers['x-rule']);
    };
    expect(await rule('/pkg.Echo/Say', { 'x-tenant': 'blue' })).toBe('blue');
    expect(await rule('/pkg.Echo/Say', { 'x-tenant': 'red' })).toBe('service');
    expect(await rule('/pkg.v2.Echo/GetAll')).toBe('regex');
    expect(await rule('/pkg.v2.Echo/Put')).toBe('404');
    expect(await rule('/other.Svc/Say')).toBe('404');
  }, 30_000);

  it('matches VirtualService method, authority, scheme, query parameters, withoutHeaders and ignoreUriCase', async () => {
    const tagged = (name: string, match: object) => ({ name, match: [match], route: [v1], headers: { request: { set: { 'x-rule': name } } } });
    const vs = istio('VirtualService', 'web', {
      hosts: ['web'],
      http: [
        tagged('method', { method: { exact: 'DELETE' } }),
        tagged('authority', { authority: { prefix: 'web.conf' } }),
        tagged('query', { queryParams: { debug: { exact: '1' } } }),
        tagged('present', { queryParams: { trace: {} } }),
        tagged('case', { uri: { prefix: '/upper' }, ignoreUriCase: true }),
        tagged('scheme', { scheme: { exact: 'https' } }),
        tagged('without', { withoutHeaders: { 'x-internal': {} } }),
        { name: 'rest', route: [v1], headers: { request: { set: { 'x-rule': 'rest' } } } },
      ],
    });
    const s = await stand(cleanup, [...base(), vs]);
    const c = client(cleanup, s);
    const rule = async (path: string, o: { method?: string; headers?: Record<string, string> } = {}) => {
      const r = await c.request(path, o);
      expect(r.status).toBe(200);
      return String(s.v1.seen.at(-1)!.headers['x-rule']);
    };
    expect(await rule('/x', { method: 'DELETE' })).toBe('method');
    expect(await rule('/x', { headers: { host: 'web.conf.svc.cluster.local', 'x-internal': '1' } })).toBe('authority');
    expect(await rule('/x?debug=1', { headers: { 'x-internal': '1' } })).toBe('query');
    expect(await rule('/x?trace', { headers: { 'x-internal': '1' } })).toBe('present');
    expect(await rule('/UPPER/x', { headers: { 'x-internal': '1' } })).toBe('case');
    expect(await rule('/x')).toBe('without'); // no x-internal; the scheme inside the tunnel is http
    expect(await rule('/x', { headers: { 'x-internal': '1' } })).toBe('rest');
  }, 30_000);

  it('answers redirects with Envoy Location and code, and direct responses, counted like other requests', async () => {
    const vs = istio('VirtualService', 'web', {
      hosts: ['web'],
      http: [
        { name: 'moved', match: [{ uri: { prefix: '/old' } }], redirect: { uri: '/new', authority: 'example.com', redirectCode: 308 } },
        { name: 'secure', match: [{ uri: { prefix: '/login' } }], redirect: { scheme: 'https', port: 8443 } },
        { name: 'teapot', match: [{ uri: { exact: '/tea' } }], directResponse: { status: 418, body: { string: 'short and stout' } }, headers: { response: { set: { 'x-pot': 'yes' } } } },
        { name: 'bytes', match: [{ uri: { exact: '/bin' } }], directResponse: { status: 200, body: { bytes: Buffer.from([0, 1, 2, 255]).toString('base64') } } },
        { name: 'rest', route: [v1] },
      ],
    });
    const s = await stand(cleanup, [...base(), vs]);
    const c = client(cleanup, s);
    const moved = await c.request('/old/page?q=1');
    expect(moved.status).toBe(308);
    expect(moved.headers.location).toBe('http://example.com/new?q=1');
    expect(moved.body).toBe('');
    const secure = await c.request('/login', { headers: { host: 'web:80' } });
    expect(secure.status).toBe(301);
    expect(secure.headers.location).toBe('https://web:8443/login');
    const tea = await c.request('/tea', { method: 'POST', body: 'ignored' });
    expect(tea).toMatchObject({ status: 418, body: 'short and stout' });
    expect(tea.headers['content-type']).toBe('text/plain');
    expect(tea.headers['x-pot']).toBe('yes');
    const bin = await c.request('/bin');
    expect(bin.status).toBe(200);
    expect(bin.headers['content-length']).toBe('4'); // the four bytes, not their base64
    expect(s.v1.seen).toHaveLength(0);

    const gw = gateway('HTTPRoute', 'web', {
      parentRefs: [parent],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/docs' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', hostname: 'docs.example.com', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v2' } } }] },
        { backendRefs: [web] },
      ],
    });
    s.apply([...base(), gw]);
    await eventually(async () => (await c.request('/docs/a?x')).status === 302, 'the HTTPRoute redirect');
    expect((await c.request('/docs/guide/intro?x=1')).headers.location).toBe('https://docs.example.com/v2/guide/intro?x=1');

    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    const labels = { reporter: 'waypoint', destination_service: HOST, response_flags: '-' };
    expect(await metric(s.registry, 'istio_requests_total', { ...labels, response_code: '308' })).toBe(1);
    expect(await metric(s.registry, 'istio_requests_total', { ...labels, response_code: '418' })).toBe(1);
    expect(await metric(s.registry, 'istio_response_bytes_sum', { response_code: '418' })).toBe('short and stout'.length);
    expect(s.accessLog.find((l) => l.response_code === 418)).toMatchObject({ route_name: 'teapot', response_flags: '-', path: '/tea' });
  }, 30_000);

  it('rewrites the path and authority the backend sees (VirtualService and HTTPRoute)', async () => {
    const vs = istio('VirtualService', 'web', {
      hosts: ['web'],
      http: [
        { name: 'prefix', match: [{ uri: { prefix: '/v1/api' } }], rewrite: { uri: '/api', authority: 'internal.web' }, route: [v1] },
        { name: 'regex', match: [{ uri: { prefix: '/svc/' } }], rewrite: { uriRegexRewrite: { match: '^/svc/([^/]+)/(.*)$', rewrite: '/\\2?svc=\\1' } }, route: [v1] },
        { name: 'huge', match: [{ uri: { prefix: '/huge' } }], rewrite: { uriRegexRewrite: { match: '.', rewrite: 'x'.repeat(1000) } }, route: [v1] },
        { name: 'rest', route: [v1] },
      ],
    });
    const s = await stand(cleanup, [...base(), vs]);
    const c = client(cleanup, s);
    expect((await c.request('/v1/api/users?id=7')).status).toBe(200);
    expect(s.v1.seen.at(-1)).toMatchObject({ url: '/api/users?id=7', headers: { host: 'internal.web', 'x-envoy-original-path': '/v1/api/users?id=7' } });
    expect((await c.request('/svc/orders/list')).status).toBe(200);
    expect(s.v1.seen.at(-1)!.url).toBe('/list?svc=orders'); // as Envoy: the substitution is the new path, the request's (empty) query appended
    // Hostile: 1000 characters per path character would be a megabyte path: refused, nothing sent.
    const before = s.v1.seen.length;
    const huge = await c.request(`/huge/${'a'.repeat(2000)}`);
    expect(huge.status).toBe(414);
    expect(s.v1.seen.length).toBe(before);
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(s.accessLog.at(-1)).toMatchObject({ response_code: 414, route_name: 'huge' });

    const gw = gateway('HTTPRoute', 'web', {
      parentRefs: [parent],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/strip' } }], filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'rewritten.example', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/' } } }], backendRefs: [web] },
        { matches: [{ path: { type: 'PathPrefix', value: '/full' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/replaced' } } }], backendRefs: [web] },
      ],
    });
    s.apply([...base(), gw]);
    const seenUrl = async (path: string) => {
      const r = await c.request(path);
      if (r.status !== 200) return `${r.status}`;
      return (JSON.parse(r.body) as { url: string }).url;
    };
    await eventually(async () => (await seenUrl('/strip/a')) === '/a', 'the HTTPRoute rewrite');
    expect(await seenUrl('/strip')).toBe('/');
    expect(await seenUrl('/strip/x/y?z=1')).toBe('/x/y?z=1');
    expect(await seenUrl('/full/any/thing?k=v')).toBe('/replaced?k=v');
  }, 30_000);

  it('sets, adds and removes request headers the backend sees and response headers the client sees, route and destination level', async () => {
    const vs = istio('VirtualService', 'web', {
      hosts: ['web'],
      http: [{
        name: 'headers',
        headers: {
          request: { set: { 'x-set': 'route' }, add: { 'x-add': 'added' }, remove: ['x-secret'] },
          response: { set: { 'x-served-by': 'waypoint' }, add: { 'x-multi': 'two' }, remove: ['content-type'] },
        },
        route: [
          { destination: { host: 'web', subset: 'v1' }, weight: 50, headers: { request: { set: { 'x-dest': 'v1' } }, response: { set: { 'x-dest': 'v1' } } } },
          { destination: { host: 'web', subset: 'v2' }, weight: 50, headers: { request: { set: { 'x-dest': 'v2' } }, response: { set: { 'x-dest': 'v2' } } } },
        ],
      }],
    });
    const s = await stand(cleanup, [...base(), vs]);
    const c = client(cleanup, s);
    const seenPods = new Set<string>();
    for (let i = 0; i < 20 && seenPods.size < 2; i++) {
      const r = await c.request('/h', { headers: { 'x-set': 'client', 'x-add': 'original', 'x-secret': 'hush' } });
      const pod = (JSON.parse(r.body) as { pod: string }).pod;
      seenPods.add(pod);
      const backend = pod === 'web-v1' ? s.v1 : s.v2;
      const seen = backend.seen.at(-1)!;
      expect(seen.headers['x-set']).toBe('route');
      expect(seen.headers['x-add']).toBe('original, added');
      expect(seen.headers['x-secret']).toBeUndefined();
      expect(seen.headers['x-dest']).toBe(pod.slice(4));
      expect(r.headers['x-served-by']).toBe('waypoint');
      expect(r.headers['x-dest']).toBe(pod.slice(4));
      expect(r.headers['content-type']).toBeUndefined();
    }
    expect(seenPods.size).toBe(2);
  }, 30_000);

  it('mirrors to the other backend at 100% (host -shadow), never at 0%, and a hanging mirror does not hold the main request', async () => {
    const vs = (pct: number, extra: object = {}) => istio('VirtualService', 'web', {
      hosts: ['web'],
      http: [{ name: 'm', route: [v1], mirror: { host: 'web', subset: 'v2' }, mirrorPercentage: { value: pct }, ...extra }],
    });
    const s = await stand(cleanup, [...base(), vs(100)]);
    const c = client(cleanup, s);
    const r = await c.request('/copy?x=1', { method: 'POST', body: 'payload' });
    expect(JSON.parse(r.body)).toMatchObject({ pod: 'web-v1', body: 7 });
    await until(() => s.v2.seen.length === 1, 5000, 'the mirror');
    expect(s.v2.seen[0]).toMatchObject({ method: 'POST', url: '/copy?x=1', body: 7, headers: { host: 'web-shadow' } });

    s.apply([...base(), vs(0)]);
    await until(() => [...s.config.table.routes.values()].some((rc) => rc.virtualHosts[0]?.routes[0]?.mirrors?.[0]?.fraction === 0), 10_000, 'mirror at 0%');
    for (let i = 0; i < 20; i++) expect((await c.request('/none')).status).toBe(200);
    await until(() => s.waypoint.stats().requests === 0, 5000, 'requests done');
    expect(s.v2.seen).toHaveLength(1);

    // The mirror's agent never answers the CONNECT: the main request is served all the same.
    s.apply([...base(), vs(100)]);
    await until(() => [...s.config.table.routes.values()].some((rc) => rc.virtualHosts[0]?.routes[0]?.mirrors?.[0]?.fraction === 1), 10_000, 'mirror at 100%');
    let hung = 0;
    s.v2.hbone.decide = () => {
      hung++;
      return new Promise(() => {});
    };
    const main = await c.request('/hang', { method: 'POST', body: 'x'.repeat(1000) });
    expect(JSON.parse(main.body)).toMatchObject({ pod: 'web-v1', body: 1000 });
    await until(() => hung === 1, 5000, 'the mirror tried');
    expect(mirrorsInFlight()).toBe(1); // still hanging, the main request long done
    // A body over the mirror's copy bound: the main request is whole, the mirror not sent.
    const big = Buffer.alloc(256 * 1024, 1);
    const r2 = await c.request('/big', { method: 'POST', body: big });
    expect(JSON.parse(r2.body)).toMatchObject({ pod: 'web-v1', body: big.length });
    expect(hung).toBe(1);
    // A flood while the mirror target hangs: every main request served, the mirrors capped.
    let next = 0;
    const N = MAX_IN_FLIGHT + 40;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < N) {
        next++;
        expect((await c.request('/flood')).status).toBe(200);
      }
    }));
    await until(() => hung === MAX_IN_FLIGHT, 5000, 'the capped mirrors tried');
    expect(mirrorsInFlight()).toBe(MAX_IN_FLIGHT);
  }, 60_000);
});
