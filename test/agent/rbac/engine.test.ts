// The engine on hand-written model policies: match semantics, CIDR edges, policy selection,
// deciding-policy names and fail-closed handling of malformed snapshots.
import { describe, expect, it } from 'vitest';
import type { AuthorizationPolicy, Match } from '../../../src/api/mesh.ts';
import { policyKey } from '../../../src/api/mesh.ts';
import { AuthorizationEngine, istioPrincipal } from '../../../src/agent/rbac/engine.ts';
import { id, workload } from './harness.ts';

const pol = (name: string, namespace: string, action: AuthorizationPolicy['action'], matches: Match[][] | null, scope: AuthorizationPolicy['scope'] = 'NAMESPACE'): AuthorizationPolicy => ({
  name, namespace, scope, action, rules: matches === null ? [] : [{ clauses: matches.map((m) => ({ matches: m })) }],
});
const engine = (...ps: AuthorizationPolicy[]) => new AuthorizationEngine(new Map(ps.map((p) => [policyKey(p), p])), 'istio-system');
const DST = workload();
const conn = (o: Partial<{ srcIdentity: ReturnType<typeof id>; srcIp: string; dstIp: string; dstPort: number }> = {}) => ({ srcIp: '10.0.2.5', dstIp: '10.0.1.10', dstPort: 8080, ...o });

describe('match semantics', () => {
  const allowIf = (m: Match) => engine(pol('a', 'foo', 'ALLOW', [[m]]));
  it.each<[string, Match, ReturnType<typeof conn>, boolean]>([
    ['exact principal', { principals: [{ exact: 'cluster.local/ns/bar/sa/sleep' }] }, conn({ srcIdentity: id('bar', 'sleep') }), true],
    ['principal has no spiffe:// scheme', { principals: [{ exact: 'spiffe://cluster.local/ns/bar/sa/sleep' }] }, conn({ srcIdentity: id('bar', 'sleep') }), false],
    ['principal prefix', { principals: [{ prefix: 'cluster.local/ns/bar/' }] }, conn({ srcIdentity: id('bar', 'x') }), true],
    ['principal suffix', { principals: [{ suffix: '/sa/sleep' }] }, conn({ srcIdentity: id('baz', 'sleep') }), true],
    ['principal presence, identity', { principals: [{ presence: {} }] }, conn({ srcIdentity: id('a', 'b') }), true],
    ['principal presence, none', { principals: [{ presence: {} }] }, conn(), false],
    ['notPrincipals presence, none', { notPrincipals: [{ presence: {} }] }, conn(), true],
    ['notPrincipals presence, identity', { notPrincipals: [{ presence: {} }] }, conn({ srcIdentity: id('a', 'b') }), false],
    ['namespace from identity', { namespaces: [{ exact: 'bar' }] }, conn({ srcIdentity: id('bar', 'x') }), true],
    ['namespace, no identity', { namespaces: [{ exact: '' }] }, conn(), false],
    ['notNamespaces, no identity', { notNamespaces: [{ exact: 'bar' }] }, conn(), true],
    ['notNamespaces, listed', { notNamespaces: [{ exact: 'bar' }, { exact: 'baz' }] }, conn({ srcIdentity: id('baz', 'x') }), false],
    ['positive and negative of one field', { namespaces: [{ prefix: 'team-' }], notNamespaces: [{ exact: 'team-x' }] }, conn({ srcIdentity: id('team-x', 'a') }), false],
    ['fields AND-ed', { namespaces: [{ exact: 'bar' }], destinationPorts: [9090] }, conn({ srcIdentity: id('bar', 'x') }), false],
    ['destination IP', { destinationIps: [{ address: '10.0.1.0', length: 24 }] }, conn(), true],
    ['notDestinationIps', { notDestinationIps: [{ address: '10.0.1.10', length: 32 }] }, conn(), false],
    ['notDestinationPorts', { notDestinationPorts: [8080] }, conn({ dstPort: 8081 }), true],
    ['empty match is unconstrained', {}, conn(), true],
  ])('%s', (_n, m, c, allowed) => {
    expect(allowIf(m).evaluate(c, DST).allowed).toBe(allowed);
  });

  it.each<[string, string, number, string, boolean]>([
    ['/0 v4 covers all v4', '0.0.0.0', 0, '255.255.255.255', true],
    ['/31 upper', '192.168.0.0', 31, '192.168.0.1', true],
    ['/31 past', '192.168.0.0', 31, '192.168.0.2', false],
    ['/32 exact', '192.168.0.7', 32, '192.168.0.7', true],
    ['host bits in the rule are masked', '10.1.2.3', 8, '10.200.0.1', true],
    ['v6 /64 last', '2001:db8:0:1::', 64, '2001:db8:0:1:ffff:ffff:ffff:ffff', true],
    ['v6 /64 next', '2001:db8:0:1::', 64, '2001:db8:0:2::', false],
    ['v6 /128', '2001:db8::1', 128, '2001:DB8:0:0:0:0:0:1', true],
    ['v6 /127', 'fe80::', 127, 'fe80::2', false],
    ['::/0 excludes v4', '::', 0, '10.0.0.1', false],
    ['v4 rule, mapped source', '10.0.0.0', 8, '::ffff:10.9.9.9', true],
    ['garbage source IP', '0.0.0.0', 0, 'not-an-ip', false],
  ])('CIDR %s', (_n, address, length, src, inside) => {
    const e = allowIf({ sourceIps: [{ address, length }] });
    expect(e.evaluate(conn({ srcIp: src }), DST).allowed).toBe(inside);
  });

  it('clause semantics: matches OR-ed, clauses AND-ed, rules OR-ed', () => {
    const p: AuthorizationPolicy = {
      name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'ALLOW',
      rules: [
        { clauses: [{ matches: [{ destinationPorts: [1] }, { destinationPorts: [2] }] }, { matches: [{ namespaces: [{ exact: 'bar' }] }] }] },
        { clauses: [{ matches: [{ destinationPorts: [3] }] }] },
      ],
    };
    const e = engine(p);
    const bar = id('bar', 'x');
    expect(e.evaluate(conn({ dstPort: 2, srcIdentity: bar }), DST).allowed).toBe(true);
    expect(e.evaluate(conn({ dstPort: 2 }), DST).allowed).toBe(false);
    expect(e.evaluate(conn({ dstPort: 3 }), DST).allowed).toBe(true);
    expect(e.evaluate(conn({ dstPort: 4, srcIdentity: bar }), DST).allowed).toBe(false);
  });

  it('istioPrincipal drops the scheme', () => {
    expect(istioPrincipal(id('a', 'b', 'td'))).toBe('td/ns/a/sa/b');
  });
});

describe('policy selection and decisions', () => {
  const denyAll = (name: string, ns: string, scope: AuthorizationPolicy['scope'] = 'NAMESPACE') => pol(name, ns, 'DENY', [], scope);

  it('GLOBAL only from the root namespace', () => {
    expect(engine(denyAll('g', 'istio-system', 'GLOBAL')).evaluate(conn(), DST)).toEqual({ allowed: false, policy: 'istio-system/g', audit: [] });
    expect(engine(denyAll('g', 'elsewhere', 'GLOBAL')).evaluate(conn(), DST).allowed).toBe(true);
  });

  it('WORKLOAD_SELECTOR only when the workload names it', () => {
    const e = engine(denyAll('sel', 'foo', 'WORKLOAD_SELECTOR'));
    expect(e.evaluate(conn(), DST).allowed).toBe(true);
    expect(e.evaluate(conn(), workload({ authorizationPolicies: ['foo/sel'] }))).toEqual({ allowed: false, policy: 'foo/sel', audit: [] });
  });

  it('a named policy missing from the snapshot denies', () => {
    expect(engine().evaluate(conn(), workload({ authorizationPolicies: ['istio-system/istio_converted_static_strict'] }))).toEqual({
      allowed: false, policy: 'missing policy: istio-system/istio_converted_static_strict', audit: [],
    });
  });

  it('the deciding DENY is the first in global, namespace, selector order, by key', () => {
    const e = engine(denyAll('z', 'foo'), denyAll('a', 'foo'), denyAll('g', 'istio-system', 'GLOBAL'), denyAll('s', 'foo', 'WORKLOAD_SELECTOR'));
    expect(e.evaluate(conn(), workload({ authorizationPolicies: ['foo/s'] })).policy).toBe('istio-system/g');
    expect(engine(denyAll('z', 'foo'), denyAll('a', 'foo')).evaluate(conn(), DST).policy).toBe('foo/a');
  });

  it('ALLOW with zero rules matches nothing; a policy listed twice counts once', () => {
    const e = engine(pol('none', 'foo', 'ALLOW', null, 'WORKLOAD_SELECTOR'));
    expect(e.evaluate(conn(), workload({ authorizationPolicies: ['foo/none', 'foo/none'] }))).toEqual({ allowed: false, policy: 'no ALLOW policy matched: foo/none', audit: [] });
  });

  it('results are per workload even with a shared cache', () => {
    const e = engine(denyAll('s', 'foo', 'WORKLOAD_SELECTOR'), denyAll('n', 'other'));
    expect(e.evaluate(conn(), workload({ authorizationPolicies: ['foo/s'] })).allowed).toBe(false);
    expect(e.evaluate(conn(), workload()).allowed).toBe(true);
    expect(e.evaluate(conn(), workload({ namespace: 'other' })).policy).toBe('other/n');
    expect(e.evaluate(conn(), workload({ authorizationPolicies: ['foo/s'] })).allowed).toBe(false);
  });

  it('AUDIT: all matches reported, decision untouched', () => {
    const e = engine(pol('a1', 'foo', 'AUDIT', []), pol('a2', 'foo', 'AUDIT', [[{ destinationPorts: [1] }]]), pol('a3', 'istio-system', 'AUDIT', [], 'GLOBAL'));
    expect(e.evaluate(conn(), DST)).toEqual({ allowed: true, audit: ['istio-system/a3', 'foo/a1'] });
  });
});

describe('malformed snapshot: fail closed per rule', () => {
  const bad: Match = { sourceIps: [{ address: '10.0.0.0', length: 40 }] };
  it('ALLOW rule that does not compile never matches', () => {
    const p = pol('a', 'foo', 'ALLOW', [[bad]]);
    expect(engine(p).evaluate(conn({ srcIp: '10.0.0.1' }), DST)).toEqual({ allowed: false, policy: 'no ALLOW policy matched: foo/a', audit: [] });
  });
  it('DENY rule that does not compile always matches', () => {
    expect(engine(pol('d', 'foo', 'DENY', [[{ sourceIps: [{ address: 'bogus', length: 8 }] }]])).evaluate(conn(), DST).policy).toBe('foo/d');
    expect(engine(pol('d', 'foo', 'DENY', [[{ destinationPorts: [70000] }]])).evaluate(conn(), DST).policy).toBe('foo/d');
  });
  it('other rules of the policy still compile normally', () => {
    const p: AuthorizationPolicy = { ...pol('a', 'foo', 'ALLOW', [[bad]]), rules: [{ clauses: [{ matches: [bad] }] }, { clauses: [{ matches: [{ destinationPorts: [8080] }] }] }] };
    expect(engine(p).evaluate(conn(), DST).allowed).toBe(true);
  });
});
