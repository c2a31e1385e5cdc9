// BackendTrafficPolicy local rate limits into Envoy resources: the route's local_ratelimit config
// and rate_limits actions as Envoy Gateway writes them (default bucket, one descriptor per rule,
// Distinct as a valueless entry, weft's sourcePrincipal as istio_authn metadata), attached per
// route object or per Service, and every policy weft cannot honour reported by file, object and
// field instead of meaning "no limit".
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../../../src/kube/objects.ts';
import { loadManifests } from '../../../../src/kube/manifest.ts';
import { analyze } from '../../../../src/control/analyze.ts';
import { ConfigSnapshot } from '../../../../src/control/config/config-store.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, TYPE_LISTENER, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { gateway, NS } from './harness.ts';

const svc = (name: string): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: '10.96.0.9', ports: [{ name: 'http', port: 80 }] } });
const httpRoute = (name: string, prefix: string): KObject =>
  gateway('HTTPRoute', name, { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ matches: [{ path: { value: prefix } }], backendRefs: [{ name: 'web', port: 80 }] }] });
const btp = (name: string, spec: object): KObject => ({ apiVersion: 'gateway.envoyproxy.io/v1alpha1', kind: 'BackendTrafficPolicy', metadata: { name, namespace: NS }, spec });
const local = (rules: object[], target: object = { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'limited' }) => ({ targetRefs: [target], rateLimit: { type: 'Local', local: { rules } } });

type Msg = Record<string, unknown>;
const unAny = (a: Msg): Msg => decode(String(a.type_url ?? a.typeUrl), a.value as Uint8Array);

/** The routes of web:80 by path (a PathPrefix is two routes, the exact path and the prefix with "/"), with the rate limit filter config unwrapped. */
function routes(objects: KObject[]) {
  const built = buildEnvoyResources(objects, DEFAULT_MESH);
  const rc = decode(TYPE_ROUTE, built.resources.get(TYPE_ROUTE)!.get(`web.${NS}.svc.cluster.local:80`)!);
  const out: Record<string, { filter?: Msg; rateLimits?: unknown }> = {};
  for (const r of (rc.virtualHosts as Msg[])[0]!.routes as Msg[]) {
    const wrapper = (r.typedPerFilterConfig as Msg | undefined)?.['envoy.filters.http.local_ratelimit'] as Msg | undefined;
    const fc = wrapper && unAny(wrapper);
    const m = r.match as Msg;
    out[String(m.path ?? m.prefix)] = { filter: fc && { isOptional: fc.isOptional, ...unAny(fc.config as Msg) }, rateLimits: (r.route as Msg).rateLimits };
  }
  return { routes: out, problems: built.problems, built };
}

/** 100%: HUNDRED is the enum's default, so it is left out on the wire. */
const ALL = { defaultValue: { numerator: 100 } };

describe('BackendTrafficPolicy local rate limit translation', () => {
  it('writes the default bucket and per-rule descriptors on the targeted route only', () => {
    const { routes: r, problems } = routes([
      svc('web'), httpRoute('limited', '/limited'), httpRoute('free', '/free'),
      btp('p', local([
        { limit: { requests: 10, unit: 'Second' } },
        { clientSelectors: [{ headers: [{ name: 'X-User', type: 'Distinct' }, { name: 'x-plan', value: 'gold', invert: true }] }], limit: { requests: 3, unit: 'Minute' } },
        { clientSelectors: [{ sourcePrincipal: { type: 'Distinct' } }, { sourceCIDR: { type: 'Distinct', value: '10.1.2.3/8' } }], limit: { requests: 5, unit: 'Hour' } },
        { clientSelectors: [{ methods: [{ value: 'GET' }, { value: 'HEAD' }], path: { type: 'Exact', value: '/limited/x' } }], limit: { requests: 1, unit: 'Day' } },
      ])),
    ]);
    expect(problems).toEqual([]);
    expect(r['/free']).toEqual({ filter: undefined, rateLimits: undefined });
    const { filter, rateLimits } = r['/limited']!;
    expect(filter).toEqual({
      isOptional: true,
      statPrefix: 'http_local_rate_limiter',
      tokenBucket: { maxTokens: 10, tokensPerFill: { value: 10 }, fillInterval: { seconds: 1 } },
      filterEnabled: ALL,
      filterEnforced: ALL,
      enableXRatelimitHeaders: 'DRAFT_VERSION_03',
      alwaysConsumeDefaultTokenBucket: {},
      descriptors: [
        { entries: [{ key: 'rule-0-match-0' }, { key: 'rule-0-match-1', value: 'rule-0-match-1' }], tokenBucket: { maxTokens: 3, tokensPerFill: { value: 3 }, fillInterval: { seconds: 60 } } },
        { entries: [{ key: 'source.principal' }, { key: 'masked_remote_address', value: '10.0.0.0/8' }, { key: 'remote_address' }], tokenBucket: { maxTokens: 5, tokensPerFill: { value: 5 }, fillInterval: { seconds: 3600 } } },
        { entries: [{ key: 'rule-2-match-0', value: 'rule-2-match-0' }, { key: 'rule-2-match-1', value: 'rule-2-match-1' }], tokenBucket: { maxTokens: 1, tokensPerFill: { value: 1 }, fillInterval: { seconds: 86400 } } },
      ],
    });
    expect(rateLimits).toMatchObject([
      { actions: [
        { requestHeaders: { headerName: 'x-user', descriptorKey: 'rule-0-match-0' } },
        { headerValueMatch: { descriptorKey: 'rule-0-match-1', descriptorValue: 'rule-0-match-1', expectMatch: {}, headers: [{ name: 'x-plan', stringMatch: { exact: 'gold' } }] } },
      ] },
      { actions: [
        { metadata: { descriptorKey: 'source.principal', metadataKey: { key: 'istio_authn', path: [{ key: 'source.principal' }] } } },
        { maskedRemoteAddress: { v4PrefixMaskLen: { value: 8 } } },
        { remoteAddress: {} },
      ] },
      { actions: [
        { headerValueMatch: { expectMatch: { value: true }, headers: [{ name: ':method', stringMatch: { safeRegex: { regex: 'GET|HEAD' } } }] } },
        { headerValueMatch: { expectMatch: { value: true }, headers: [{ name: ':path', stringMatch: { exact: '/limited/x' } }] } },
      ] },
    ]);
  });

  it('without a rule lacking selectors, the default bucket is effectively unlimited; a Service target covers every route of the host', () => {
    const { routes: r } = routes([svc('web'), btp('p', local([{ clientSelectors: [{ sourcePrincipal: { type: 'Exact', value: 'spiffe://cluster.local/ns/conf/sa/a' } }], limit: { requests: 2, unit: 'Second' } }], { group: '', kind: 'Service', name: 'web' }))]);
    expect(r['/']!.filter).toMatchObject({
      tokenBucket: { maxTokens: 0xffffffff, tokensPerFill: { value: 0xffffffff }, fillInterval: { seconds: 1 } },
      descriptors: [{ entries: [{ key: 'source.principal', value: 'spiffe://cluster.local/ns/conf/sa/a' }] }],
    });
  });

  it('a route policy wins over the Service policy for that route; the listener carries the filter as optional', () => {
    const { routes: r, built } = routes([
      svc('web'), httpRoute('limited', '/limited'), httpRoute('free', '/free'),
      btp('route', local([{ limit: { requests: 1, unit: 'Second' } }])),
      btp('service', local([{ limit: { requests: 7, unit: 'Second' } }], { kind: 'Service', group: '', name: 'web' })),
    ]);
    expect((r['/limited']!.filter!.tokenBucket as Msg).maxTokens).toBe(1);
    expect((r['/free']!.filter!.tokenBucket as Msg).maxTokens).toBe(7);
    const listener = decode(TYPE_LISTENER, built.resources.get(TYPE_LISTENER)!.get(`web.${NS}.svc.cluster.local:80`)!);
    const hcm = unAny((listener.apiListener as Msg).apiListener as Msg);
    expect((hcm.httpFilters as Msg[]).map((f) => [f.name, f.isOptional ?? false])).toEqual([
      ['envoy.filters.http.fault', false], ['envoy.filters.http.local_ratelimit', true], ['envoy.filters.http.router', false],
    ]);
  });
});

describe('BackendTrafficPolicy problems', () => {
  const problems = (...objects: KObject[]) => buildEnvoyResources([svc('web'), httpRoute('limited', '/limited'), ...objects], DEFAULT_MESH).problems.map((p) => `${p.name}: ${p.field}: ${p.reason}`);

  it.each<[string, object, RegExp]>([
    ['an unknown rateLimit field', { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], rateLimit: { type: 'Local', local: { rules: [{ limit: { requests: 1, unit: 'Second' } }] }, burst: 3 } }, /spec\.rateLimit\.burst: unknown field/],
    ['an unknown field in a rule', local([{ limit: { requests: 1, unit: 'Second' }, weight: 2 }]), /spec\.rateLimit\.local\.rules\[0\]\.weight: unknown field/],
    ['an unknown selector', local([{ clientSelectors: [{ queryParams: [{ name: 'a' }] }], limit: { requests: 1, unit: 'Second' } }]), /clientSelectors\[0\]\.queryParams: unknown field/],
    ['a global limit', { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], rateLimit: { type: 'Global', global: { rules: [] } } }, /spec\.rateLimit\.global: global rate limits .* not supported/],
    ['a cost', local([{ limit: { requests: 1, unit: 'Second' }, cost: { request: { from: 'Number', number: 2 } } }]), /rules\[0\]\.cost: not supported/],
    ['shadow mode', local([{ limit: { requests: 1, unit: 'Second' }, shadowMode: true }]), /rules\[0\]\.shadowMode: not supported/],
    ['a Month unit', local([{ limit: { requests: 1, unit: 'Month' } }]), /limit\.unit: Month is not supported/],
    ['two default rules', local([{ limit: { requests: 1, unit: 'Second' } }, { limit: { requests: 2, unit: 'Second' } }]), /rules\[1\]: a local rate limit can have only one rule without clientSelectors/],
    ['a rule unit not a multiple of the default', local([{ limit: { requests: 1, unit: 'Minute' } }, { clientSelectors: [{ headers: [{ name: 'a', type: 'Distinct' }] }], limit: { requests: 1, unit: 'Second' } }]), /rules\[1\]\.limit\.unit: must be a multiple of the default rule's unit/],
    ['Distinct with a value', local([{ clientSelectors: [{ headers: [{ name: 'a', type: 'Distinct', value: 'x' }] }], limit: { requests: 1, unit: 'Second' } }]), /headers\[0\]\.value: must not be set when type is Distinct/],
    ['a bad CIDR', local([{ clientSelectors: [{ sourceCIDR: { value: '10.0.0.0/33' } }], limit: { requests: 1, unit: 'Second' } }]), /sourceCIDR\.value: "10\.0\.0\.0\/33" is not a CIDR/],
    ['a principal that is not a SPIFFE id', local([{ clientSelectors: [{ sourcePrincipal: { value: 'alice' } }], limit: { requests: 1, unit: 'Second' } }]), /sourcePrincipal\.value: expected a SPIFFE id/],
    ['a bad regex', local([{ clientSelectors: [{ headers: [{ name: 'a', type: 'RegularExpression', value: '(' }] }], limit: { requests: 1, unit: 'Second' } }]), /headers\[0\]\.value: invalid regular expression/],
    ['a Gateway target', local([{ limit: { requests: 1, unit: 'Second' } }], { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' }), /spec\.targetRefs\[0\]\.kind: a Gateway target is not supported/],
    ['a sectionName', local([{ limit: { requests: 1, unit: 'Second' } }], { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'limited', sectionName: 'rule-a' }), /targetRefs\[0\]\.sectionName: not supported/],
    ['no rateLimit', { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], retry: { numRetries: 3 } }, /spec\.rateLimit: weft reads only the local rate limit/],
    ['no rules', local([]), /local\.rules: no rules/],
  ])('%s is a problem and the policy applies nowhere', (_name, spec, want) => {
    const objects = [svc('web'), httpRoute('limited', '/limited'), btp('bad', spec)];
    expect(problems(btp('bad', spec))).toContainEqual(expect.stringMatching(new RegExp(`^bad: (?:[^:]*\\.)?${want.source}`)));
    expect(Object.values(routes(objects).routes).every((r) => r.filter === undefined)).toBe(true);
  });

  it('reports other BackendTrafficPolicy features as not acted on while the limit still applies, a later policy on the same target, and targets that do not exist', () => {
    const older = { ...btp('older', { ...local([{ limit: { requests: 1, unit: 'Second' } }]), timeout: { http: { requestTimeout: '1s' } } }) };
    older.metadata.creationTimestamp = '2026-01-01T00:00:00Z';
    const newer = btp('newer', local([{ limit: { requests: 2, unit: 'Second' } }]));
    newer.metadata.creationTimestamp = '2026-02-01T00:00:00Z';
    const nowhere = btp('nowhere', { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'missing' }, { group: '', kind: 'Service', name: 'ghost' }], rateLimit: { local: { rules: [{ limit: { requests: 1, unit: 'Second' } }] } } });
    expect(problems(older, newer, nowhere).sort()).toEqual([
      `newer: spec.targetRefs[0]: HTTPRoute ${NS}/limited already has the rate limit of BackendTrafficPolicy/${NS}/older: not applied to it`,
      `nowhere: spec.targetRefs: HTTPRoute ${NS}/missing is not a known route with a Service parent: the limit applies to nothing`,
      `nowhere: spec.targetRefs: Service ghost.${NS}.svc.cluster.local is not known: the limit applies to nothing yet`,
      'older: spec.timeout: not supported by weft: ignored (the rate limit still applies)',
    ]);
    expect((routes([svc('web'), httpRoute('limited', '/limited'), older, newer]).routes['/limited']!.filter!.tokenBucket as Msg).maxTokens).toBe(1);
  });

  it('names the file of a policy loaded from YAML, and an unsupported apiVersion', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-btp-'));
    try {
      const file = join(dir, 'policy.yaml');
      writeFileSync(file, `
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: limits, namespace: ${NS}}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  rateLimit:
    type: Local
    local:
      rules:
      - limit: {requests: 10, unit: Second}
        clientSelectors: [{headers: [{name: x-user, type: Distinct, invert: true}]}]
---
apiVersion: gateway.envoyproxy.io/v1
kind: BackendTrafficPolicy
metadata: {name: future, namespace: ${NS}}
spec: {}
`);
      const loaded = loadManifests([file], { runnable: false });
      expect(loaded.problems).toEqual([]);
      const a = analyze(ConfigSnapshot.of([svc('web'), ...loaded.objects]), DEFAULT_MESH);
      expect(a.problems).toEqual([
        `${file}: BackendTrafficPolicy ${NS}/future: apiVersion: unsupported version gateway.envoyproxy.io/v1`,
        `${file}: BackendTrafficPolicy ${NS}/limits: spec.rateLimit.local.rules[0].clientSelectors[0].headers[0].invert: must not be set when type is Distinct`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
