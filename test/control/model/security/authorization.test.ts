// AuthorizationPolicy -> model: exact shapes, scopes, fail-closed translation and problem paths.
import { describe, expect, it } from 'vitest';
import { translateAuthorizationPolicy } from '../../../../src/control/model/security/authorization.ts';

const obj = (spec: unknown, ns = 'foo', extra: Record<string, unknown> = {}) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'p', namespace: ns, ...extra },
  spec,
});
const t = (spec: unknown, ns?: string) => translateAuthorizationPolicy(obj(spec, ns));
const fields = (r: { problems: { field: string }[] }) => r.problems.map((p) => p.field);

describe('translateAuthorizationPolicy: structure', () => {
  it('from -> one clause of sources, to -> one clause, each when -> one clause', () => {
    const r = t({
      action: 'DENY',
      rules: [{
        from: [
          { source: { principals: ['cluster.local/ns/a/sa/b', 'cluster.local/ns/x/*'], notNamespaces: ['kube-*'], ipBlocks: ['10.0.0.0/8'], notIpBlocks: ['10.1.2.3'] } },
          { source: { namespaces: ['*'] } },
        ],
        to: [{ operation: { ports: ['80', 443], notPorts: ['8080'] } }],
        when: [{ key: 'destination.ip', values: ['fd00::/8'], notValues: ['fd00::1'] }, { key: 'source.principal', notValues: ['*admin'] }],
      }],
    });
    expect(r.problems).toEqual([]);
    expect(r.selector).toBeUndefined();
    expect(r.policy).toEqual({
      name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'DENY',
      rules: [{
        clauses: [
          {
            matches: [
              {
                principals: [{ exact: 'cluster.local/ns/a/sa/b' }, { prefix: 'cluster.local/ns/x/' }],
                notNamespaces: [{ prefix: 'kube-' }],
                sourceIps: [{ address: '10.0.0.0', length: 8 }],
                notSourceIps: [{ address: '10.1.2.3', length: 32 }],
              },
              { namespaces: [{ presence: {} }] },
            ],
          },
          { matches: [{ destinationPorts: [80, 443], notDestinationPorts: [8080] }] },
          { matches: [{ destinationIps: [{ address: 'fd00::', length: 8 }], notDestinationIps: [{ address: 'fd00::1', length: 128 }] }] },
          { matches: [{ notPrincipals: [{ suffix: 'admin' }] }] },
        ],
      }],
    });
  });

  it('serviceAccounts become exact principals in the configured trust domain', () => {
    const r = translateAuthorizationPolicy(obj({ rules: [{ from: [{ source: { serviceAccounts: ['bar/sleep', 'local'], notServiceAccounts: ['bar/bad'] } }] }] }), { trustDomain: 'corp.example' });
    expect(r.policy?.rules).toEqual([{
      clauses: [{ matches: [{ principals: [{ exact: 'corp.example/ns/bar/sa/sleep' }, { exact: 'corp.example/ns/foo/sa/local' }], notPrincipals: [{ exact: 'corp.example/ns/bar/sa/bad' }] }] }],
    }]);
  });

  it('principals lose a spiffe:// scheme; wildcards follow Istio', () => {
    const r = t({ rules: [{ from: [{ source: { principals: ['spiffe://td/ns/a/sa/b', 'spiffe://td/ns/c/*', '*'] } }] }] });
    expect(r.policy?.rules[0]?.clauses[0]?.matches[0]?.principals).toEqual([{ exact: 'td/ns/a/sa/b' }, { prefix: 'td/ns/c/' }, { presence: {} }]);
  });

  it.each([
    ['spec: {} is ALLOW with no rules (allow-nothing)', {}, 'ALLOW', []],
    ['missing spec likewise', undefined, 'ALLOW', []],
    ['rules: [{}] is one rule without clauses (allow-all)', { rules: [{}] }, 'ALLOW', [{ clauses: [] }]],
    ['empty lists are no constraint', { rules: [{ from: [{ source: { namespaces: [] } }], to: [] }] }, 'ALLOW', [{ clauses: [] }]],
    ['AUDIT kept', { action: 'AUDIT', rules: [{}] }, 'AUDIT', [{ clauses: [] }]],
  ])('%s', (_n, spec, action, rules) => {
    const r = t(spec);
    expect(r.problems).toEqual([]);
    expect(r.policy?.action).toBe(action);
    expect(r.policy?.rules).toEqual(rules);
  });
});

describe('translateAuthorizationPolicy: scope', () => {
  it.each([
    ['root namespace, no selector', 'istio-system', undefined, 'GLOBAL'],
    ['namespace, no selector', 'foo', undefined, 'NAMESPACE'],
    ['empty matchLabels selects the namespace', 'foo', { matchLabels: {} }, 'NAMESPACE'],
    ['selector', 'foo', { matchLabels: { app: 'x' } }, 'WORKLOAD_SELECTOR'],
    ['selector in the root namespace', 'istio-system', { matchLabels: { app: 'x' } }, 'WORKLOAD_SELECTOR'],
  ])('%s', (_n, ns, selector, scope) => {
    const r = t({ selector, rules: [{}] }, ns);
    expect(r.policy?.scope).toBe(scope);
    expect(r.selector).toEqual(scope === 'WORKLOAD_SELECTOR' ? selector?.matchLabels : undefined);
  });

  it('honours a custom root namespace', () => {
    expect(translateAuthorizationPolicy(obj({}, 'mesh-root'), { rootNamespace: 'mesh-root' }).policy?.scope).toBe('GLOBAL');
  });
});

describe('translateAuthorizationPolicy: fail closed', () => {
  const l7Rule = { from: [{ source: { namespaces: ['bar'], requestPrincipals: ['*'] } }], to: [{ operation: { ports: ['80'], methods: ['GET'], paths: ['/x'] } }], when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] };

  it('ALLOW: a rule with L7 fields is dropped, each field reported', () => {
    const r = t({ rules: [l7Rule, { from: [{ source: { namespaces: ['ok'] } }] }] });
    expect(r.policy?.rules).toEqual([{ clauses: [{ matches: [{ namespaces: [{ exact: 'ok' }] }] }] }]);
    expect(fields(r)).toEqual(['spec.rules[0].from[0].source.requestPrincipals', 'spec.rules[0].to[0].operation.methods', 'spec.rules[0].to[0].operation.paths', 'spec.rules[0].when[0].key']);
    expect(r.problems[0]?.reason).toMatch(/ALLOW rule dropped/);
  });

  it('ALLOW whose rules were all dropped still exists with zero rules', () => {
    const r = t({ rules: [l7Rule] });
    expect(r.policy).toMatchObject({ action: 'ALLOW', rules: [] });
  });

  it('DENY: L7 fields ignored, the L4 parts remain', () => {
    const r = t({ action: 'DENY', rules: [l7Rule] });
    expect(r.policy?.rules).toEqual([{ clauses: [{ matches: [{ namespaces: [{ exact: 'bar' }] }] }, { matches: [{ destinationPorts: [80] }] }] }]);
    expect(r.problems[0]?.reason).toMatch(/ignored, the DENY rule matches/);
  });

  it('DENY: an L7-only source makes its clause unconstrained (dropped)', () => {
    const r = t({ action: 'DENY', rules: [{ from: [{ source: { requestPrincipals: ['*'] } }, { source: { namespaces: ['a'] } }], to: [{ operation: { ports: ['1'] } }] }] });
    expect(r.policy?.rules).toEqual([{ clauses: [{ matches: [{ destinationPorts: [1] }] }] }]);
  });

  it.each([
    ['unknown source field', { from: [{ source: { namespace: ['bar'] } }] }, 'spec.rules[0].from[0].source.namespace'],
    ['unknown operation field', { to: [{ operation: { port: ['80'] } }] }, 'spec.rules[0].to[0].operation.port'],
    ['unknown rule field', { form: [] }, 'spec.rules[0].form'],
    ['unknown from field', { from: [{ sources: {} }] }, 'spec.rules[0].from[0].sources'],
    ['unknown condition key', { when: [{ key: 'source.nmespace', values: ['x'] }] }, 'spec.rules[0].when[0].key'],
    ['condition without values', { when: [{ key: 'source.ip' }] }, 'spec.rules[0].when[0]'],
    ['bad CIDR', { from: [{ source: { ipBlocks: ['10.0.0.0/8', '10.0.0.0/33'] } }] }, 'spec.rules[0].from[0].source.ipBlocks[1]'],
    ['bad IP', { from: [{ source: { notIpBlocks: ['10.0.0.300'] } }] }, 'spec.rules[0].from[0].source.notIpBlocks[0]'],
    ['bad port', { to: [{ operation: { ports: ['80', '70000'] } }] }, 'spec.rules[0].to[0].operation.ports[1]'],
    ['port range', { to: [{ operation: { ports: ['80-90'] } }] }, 'spec.rules[0].to[0].operation.ports[0]'],
    ['wildcard service account', { from: [{ source: { serviceAccounts: ['bar/*'] } }] }, 'spec.rules[0].from[0].source.serviceAccounts[0]'],
    ['serviceAccounts with principals', { from: [{ source: { serviceAccounts: ['a/b'], principals: ['x'] } }] }, 'spec.rules[0].from[0].source.serviceAccounts'],
    ['not a list', { from: { source: {} } }, 'spec.rules[0].from'],
  ])('%s: problem at the field, ALLOW rule dropped', (_n, rule, field) => {
    const r = t({ rules: [rule] });
    expect(fields(r)).toContain(field);
    expect(r.policy?.rules).toEqual([]);
  });

  it('DENY with an unreadable value drops that constraint only (matches more)', () => {
    const r = t({ action: 'DENY', rules: [{ from: [{ source: { namespaces: ['bar'], ipBlocks: ['nope'] } }] }] });
    expect(fields(r)).toEqual(['spec.rules[0].from[0].source.ipBlocks[0]']);
    expect(r.policy?.rules).toEqual([{ clauses: [{ matches: [{ namespaces: [{ exact: 'bar' }] }] }] }]);
  });

  it('unknown spec field: ALLOW keeps zero rules, DENY ignores it', () => {
    const allow = t({ rules: [{}], matchLabels: { app: 'x' } });
    expect(fields(allow)).toEqual(['spec.matchLabels']);
    expect(allow.policy?.rules).toEqual([]);
    const deny = t({ action: 'DENY', rules: [{}], extra: 1 });
    expect(fields(deny)).toEqual(['spec.extra']);
    expect(deny.policy?.rules).toEqual([{ clauses: [] }]);
  });

  it('targetRefs: the waypoint\'s, marked targeted with no selector; its L4 form fails closed like any rule', () => {
    const tr = [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'wp' }];
    const allow = t({ targetRefs: tr, rules: [{ to: [{ operation: { paths: ['/x'] } }] }, { from: [{ source: { namespaces: ['a'] } }] }] });
    expect(allow.targeted).toBe(true);
    expect(allow.selector).toBeUndefined();
    expect(fields(allow)).toEqual(['spec.rules[0].to[0].operation.paths']);
    expect(allow.policy).toEqual({ name: 'p', namespace: 'foo', scope: 'WORKLOAD_SELECTOR', action: 'ALLOW', rules: [{ clauses: [{ matches: [{ namespaces: [{ exact: 'a' }] }] }] }] });
    const deny = t({ targetRef: tr[0], action: 'DENY', rules: [{ to: [{ operation: { ports: ['9'], methods: ['GET'] } }] }] });
    expect(deny.policy).toMatchObject({ scope: 'WORKLOAD_SELECTOR', action: 'DENY', rules: [{ clauses: [{ matches: [{ destinationPorts: [9] }] }] }] });
  });

  it('selector with unknown parts: reported, the readable labels are used', () => {
    const r = t({ selector: { matchLabels: { app: 'x' }, matchExpressions: [] }, action: 'DENY', rules: [{}] });
    expect(fields(r)).toEqual(['spec.selector.matchExpressions', 'spec.selector']);
    expect(r.selector).toEqual({ app: 'x' });
  });

  it('CUSTOM becomes DENY over its rules with L7 ignored', () => {
    const r = t({ action: 'CUSTOM', provider: { name: 'ext' }, rules: [{ to: [{ operation: { paths: ['/admin'], ports: ['8443'] } }] }] });
    expect(r.policy).toMatchObject({ action: 'DENY', rules: [{ clauses: [{ matches: [{ destinationPorts: [8443] }] }] }] });
    expect(fields(r)).toEqual(['spec.action', 'spec.rules[0].to[0].operation.paths']);
  });

  it('unknown action becomes DENY-all for the scope', () => {
    const r = t({ action: 'REJECT', rules: [{ from: [{ source: { namespaces: ['a'] } }] }] });
    expect(r.policy).toMatchObject({ action: 'DENY', rules: [{ clauses: [] }] });
    expect(fields(r)).toEqual(['spec.action']);
  });

  it('malformed rules: ALLOW none, DENY everything', () => {
    expect(t({ rules: 'x' }).policy?.rules).toEqual([]);
    expect(t({ action: 'DENY', rules: 'x' }).policy?.rules).toEqual([{ clauses: [] }]);
  });

  it('spec not an object: DENY-all for the namespace', () => {
    const r = t('oops');
    expect(r.policy).toMatchObject({ scope: 'NAMESPACE', action: 'DENY', rules: [{ clauses: [] }] });
    expect(fields(r)).toEqual(['spec']);
  });

  it('dry-run annotation: AUDIT', () => {
    const r = translateAuthorizationPolicy(obj({ action: 'DENY', rules: [{}] }, 'foo', { annotations: { 'istio.io/dry-run': 'true' } }));
    expect(r.policy?.action).toBe('AUDIT');
  });

  it.each([
    ['wrong kind', { ...obj({}), kind: 'PeerAuthentication' }, 'kind'],
    ['wrong group', { ...obj({}), apiVersion: 'networking.istio.io/v1' }, 'apiVersion'],
    ['no namespace', { ...obj({}), metadata: { name: 'p' } }, 'metadata'],
  ])('%s: no policy', (_n, o, field) => {
    const r = translateAuthorizationPolicy(o);
    expect(r.policy).toBeUndefined();
    expect(fields(r)).toEqual([field]);
  });

  it('v1beta1 accepted', () => {
    expect(translateAuthorizationPolicy({ ...obj({}), apiVersion: 'security.istio.io/v1beta1' }).policy).toBeDefined();
  });
});
