// AuthorizationPolicy attached to a waypoint -> the Listener's RBAC and ext_authz filters, decoded
// back from the encoded Listener: every field and condition key as istiod writes it, the actions in
// istiod's order, CUSTOM with both provider kinds (and failing closed without one), TCP chains,
// attachment to a Gateway, a Service or a ServiceEntry, problems naming object and field, and
// hostile input (regex metacharacters stay literal, huge policies stay bounded).
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../../../src/kube/objects.ts';
import { envoyType } from '../../../../src/api/envoy.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { TYPE_LISTENER } from '../../../../src/control/xds/envoy/messages.ts';
import { istio, NS } from './harness.ts';

// Decoded Envoy messages are walked freely here; the assertions check their shape.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Msg = Record<string, any>;

/** Decodes as plain data: no oneof discriminators, Any unpacked into { '@type', ...message }. */
function plain(typeName: string, body: Uint8Array): Msg {
  const t = envoyType(typeName);
  return unpack(t.toObject(t.decode(body), { enums: String, longs: Number, defaults: false, bytes: Array })) as Msg;
}
function unpack(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unpack);
  if (typeof v !== 'object' || v === null) return v;
  const o = v as Msg;
  const url = o.type_url ?? o.typeUrl;
  if (typeof url === 'string' && 'value' in o) {
    const name = url.slice(url.lastIndexOf('/') + 1);
    return { '@type': name, ...plain(name, Uint8Array.from(o.value as number[])) };
  }
  return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unpack(x)]));
}

const svc = (name: string, ports: object[]): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: '10.96.0.9', ports } } as KObject);
const WEB = svc('web', [{ name: 'http', port: 80 }, { name: 'other', port: 9000 }]);
const DB_SVC = svc('db', [{ name: 'tcp-db', port: 5432 }]);
const API = svc('api', [{ name: 'http', port: 80 }]);
const WAYPOINT: KObject = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: NS }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } } as KObject;
const SE = istio('ServiceEntry', 'ext', { hosts: ['ext.example.com'], resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '10.1.1.1' }] });

const REF = {
  web: { group: '', kind: 'Service', name: 'web' },
  db: { group: '', kind: 'Service', name: 'db' },
  api: { group: '', kind: 'Service', name: 'api' },
  gw: { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' },
  se: { group: 'networking.istio.io', kind: 'ServiceEntry', name: 'ext' },
};
const ap = (name: string, spec: object, meta: object = {}): KObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: NS, ...meta }, spec } as KObject);
const meshConfig = (providers: object[]): KObject => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: JSON.stringify({ extensionProviders: providers }) } } as KObject);

const WEB80 = `web.${NS}.svc.cluster.local:80`;
const DB = `db.${NS}.svc.cluster.local:5432`;
const WEB_AUTO = `web.${NS}.svc.cluster.local:9000`;
const GW = `waypoint/${NS}/waypoint`;

/** Builds everything; per listener its HTTP filters and the network filters of its TCP chain. */
function build(objects: KObject[]) {
  const built = buildEnvoyResources([WEB, API, DB_SVC, WAYPOINT, SE, ...objects], DEFAULT_MESH);
  const listeners = built.resources.get(TYPE_LISTENER)!;
  const get = (name: string) => {
    const body = listeners.get(name);
    if (!body) throw new Error(`no listener ${name}: ${[...listeners.keys()].join(', ')}`);
    const l = plain('envoy.config.listener.v3.Listener', body);
    const hcm = l.apiListener?.apiListener;
    const chain = l.defaultFilterChain ?? l.filterChains?.[0];
    const http = ((hcm?.httpFilters ?? []) as Msg[]).filter((f) => !/fault|ratelimit|router/.test(f.name));
    const tcp = ((chain?.filters ?? []) as Msg[]).filter((f) => f.name !== 'envoy.filters.network.tcp_proxy');
    return { http: http.map((f) => ({ name: f.name, ...f.typedConfig })), tcp: tcp.map((f) => ({ name: f.name, ...f.typedConfig })), hasHcm: !!hcm };
  };
  return { get, problems: built.problems, text: built.problems.map((p) => `${p.kind}/${p.name}: ${p.field}: ${p.reason}`) };
}

const id = (name: string, i = 0) => `ns[${NS}]-policy[${name}]-rule[${i}]`;
const or = (rules: Msg[]) => ({ orRules: { rules } });
const orIds = (ids: Msg[]) => ({ orIds: { ids } });
const andP = (rules: Msg[]) => ({ andRules: { rules } });
const andI = (ids: Msg[]) => ({ andIds: { ids } });
const ANY_PRINCIPAL = andI([{ any: true }]);
const ANY_PERMISSION = andP([{ any: true }]);
const authn = (m: Msg) => ({ authenticated: { principalName: m } });
const jwt = (path: string[], value: Msg) => ({ metadata: { filter: 'istio_authn', path: path.map((key) => ({ key })), value: { orMatch: { valueMatchers: [{ listMatch: { oneOf: value } }, value] } } } });

describe('AuthorizationPolicy on a waypoint: rules', () => {
  it('translates every source, operation and condition field as istiod does', () => {
    const { get, problems } = build([
      ap('all', {
        targetRefs: [REF.web],
        rules: [
          {
            from: [
              { source: { principals: ['cluster.local/ns/a/sa/b', 'spiffe://cluster.local/ns/x/*', '*-admin', '*'], notPrincipals: ['cluster.local/ns/bad/sa/x'], requestPrincipals: ['https://issuer.example/alice', '*'], notRequestPrincipals: ['https://evil/*'] } },
              { source: { serviceAccounts: ['other/sa1', 'local'], notServiceAccounts: ['x/y'], ipBlocks: ['10.0.0.0/8'], notIpBlocks: ['10.1.2.3'], remoteIpBlocks: ['fd00::/8'], notRemoteIpBlocks: ['192.168.0.1'] } },
              { source: { namespaces: ['prod', 'team-*'], notNamespaces: ['kube-system'], trustDomains: ['td.example'] } },
            ],
            to: [{ operation: { hosts: ['web.example.com', '*.example.org', 'api.*', '*'], notHosts: ['admin.example.com'], methods: ['GET', 'HEAD'], notMethods: ['DELETE'], paths: ['/exact', '/prefix/*', '*.png', '*', '/api/{*}/items/{**}'], notPaths: ['/admin/*'], ports: ['80'], notPorts: ['8080'] } }],
            when: [
              { key: 'request.headers[X-Tenant]', values: ['acme', 'beta-*'], notValues: ['*'] },
              { key: 'request.auth.principal', values: ['iss/sub'] },
              { key: 'request.auth.audiences', values: ['web', 'api-*'] },
              { key: 'request.auth.presenter', notValues: ['bad-client'] },
              { key: 'request.auth.claims[groups]', values: ['admins'] },
              { key: 'request.auth.claims[realm][role]', values: ['editor'] },
              { key: 'source.ip', values: ['10.2.0.0/16'] },
              { key: 'remote.ip', notValues: ['1.2.3.4'] },
              { key: 'source.namespace', values: ['prod'] },
              { key: 'source.principal', values: ['cluster.local/ns/prod/sa/front'] },
              { key: 'destination.ip', values: ['10.96.0.9'] },
              { key: 'destination.port', values: ['80'] },
              { key: 'connection.sni', values: ['*.svc'] },
            ],
          },
        ],
      }),
    ]);
    expect(problems).toEqual([]);
    const { http } = get(WEB80);
    expect(http.map((f) => f.name)).toEqual(['envoy.filters.http.rbac']);
    const rbac = http[0]!;
    expect(rbac['@type']).toBe('envoy.extensions.filters.http.rbac.v3.RBAC');
    expect(rbac.rules.action).toBeUndefined(); // ALLOW is the enum's zero value
    const policy = rbac.rules.policies[id('all')];
    const whenPrincipals = [
      orIds([{ header: { name: 'X-Tenant', stringMatch: { exact: 'acme' } } }, { header: { name: 'X-Tenant', stringMatch: { prefix: 'beta-' } } }]),
      { notId: orIds([{ header: { name: 'X-Tenant', presentMatch: true } }]) },
      orIds([{ metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { stringMatch: { exact: 'iss/sub' } } } }]),
      jwt(['request.auth.audiences'], { orMatch: { valueMatchers: [{ stringMatch: { exact: 'web' } }, { stringMatch: { prefix: 'api-' } }] } }),
      { notId: jwt(['request.auth.presenter'], { stringMatch: { exact: 'bad-client' } }) },
      jwt(['request.auth.claims', 'groups'], { stringMatch: { exact: 'admins' } }),
      jwt(['request.auth.claims', 'realm', 'role'], { stringMatch: { exact: 'editor' } }),
      orIds([{ directRemoteIp: { addressPrefix: '10.2.0.0', prefixLen: { value: 16 } } }]),
      { notId: orIds([{ remoteIp: { addressPrefix: '1.2.3.4', prefixLen: { value: 32 } } }]) },
      orIds([authn({ safeRegex: { regex: '.*/ns/prod/.*' } })]),
      orIds([authn({ exact: 'spiffe://cluster.local/ns/prod/sa/front' })]),
    ];
    expect(policy.principals).toEqual([
      andI([
        orIds([authn({ exact: 'spiffe://cluster.local/ns/a/sa/b' }), authn({ prefix: 'spiffe://cluster.local/ns/x/' }), authn({ safeRegex: { regex: 'spiffe://.*-admin' } }), authn({ safeRegex: { regex: '.+' } })]),
        { notId: orIds([authn({ exact: 'spiffe://cluster.local/ns/bad/sa/x' })]) },
        orIds([
          { metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { stringMatch: { exact: 'https://issuer.example/alice' } } } },
          { metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { stringMatch: { safeRegex: { regex: '.+' } } } } },
        ]),
        { notId: orIds([{ metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { stringMatch: { prefix: 'https://evil/' } } } }]) },
        ...whenPrincipals,
      ]),
      andI([
        orIds([authn({ safeRegex: { regex: 'spiffe://.+/ns/other/(.+/|)sa/sa1(/.+)?' } }), authn({ safeRegex: { regex: `spiffe://.+/ns/${NS}/(.+/|)sa/local(/.+)?` } })]),
        { notId: orIds([authn({ safeRegex: { regex: 'spiffe://.+/ns/x/(.+/|)sa/y(/.+)?' } })]) },
        orIds([{ remoteIp: { addressPrefix: 'fd00::', prefixLen: { value: 8 } } }]),
        { notId: orIds([{ remoteIp: { addressPrefix: '192.168.0.1', prefixLen: { value: 32 } } }]) },
        orIds([{ directRemoteIp: { addressPrefix: '10.0.0.0', prefixLen: { value: 8 } } }]),
        { notId: orIds([{ directRemoteIp: { addressPrefix: '10.1.2.3', prefixLen: { value: 32 } } }]) },
        ...whenPrincipals,
      ]),
      andI([
        orIds([authn({ prefix: 'spiffe://td.example/' })]),
        orIds([authn({ safeRegex: { regex: '.*/ns/prod/.*' } }), authn({ safeRegex: { regex: '.*/ns/team-.*/.*' } })]),
        { notId: orIds([authn({ safeRegex: { regex: '.*/ns/kube-system/.*' } })]) },
        ...whenPrincipals,
      ]),
    ]);
    const header = (name: string, m: Msg) => ({ header: { name, ...m } });
    expect(policy.permissions).toEqual([
      andP([
        or([header(':authority', { stringMatch: { exact: 'web.example.com', ignoreCase: true } }), header(':authority', { stringMatch: { suffix: '.example.org', ignoreCase: true } }), header(':authority', { stringMatch: { prefix: 'api.', ignoreCase: true } }), header(':authority', { presentMatch: true })]),
        { notRule: or([header(':authority', { stringMatch: { exact: 'admin.example.com', ignoreCase: true } })]) },
        or([header(':method', { stringMatch: { exact: 'GET' } }), header(':method', { stringMatch: { exact: 'HEAD' } })]),
        { notRule: or([header(':method', { stringMatch: { exact: 'DELETE' } })]) },
        or([
          { urlPath: { path: { exact: '/exact' } } },
          { urlPath: { path: { prefix: '/prefix/' } } },
          { urlPath: { path: { suffix: '.png' } } },
          { urlPath: { path: { safeRegex: { regex: '.+' } } } },
          { uriTemplate: { name: 'uri-template', typedConfig: { '@type': 'envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', pathTemplate: '/api/*/items/**' } } },
        ]),
        { notRule: or([{ urlPath: { path: { prefix: '/admin/' } } }]) },
        or([{ destinationPort: 80 }]),
        { notRule: or([{ destinationPort: 8080 }]) },
        or([{ destinationIp: { addressPrefix: '10.96.0.9', prefixLen: { value: 32 } } }]),
        or([{ destinationPort: 80 }]),
        or([{ requestedServerName: { suffix: '.svc' } }]),
      ]),
    ]);
  });

  it('an empty rule matches everything; no rules never matches; rules are kept per index', () => {
    const { get } = build([ap('open', { targetRefs: [REF.web], rules: [{}] }), ap('closed', { targetRefs: [REF.web] }), ap('two', { targetRefs: [REF.web], rules: [{ to: [{ operation: { methods: ['GET'] } }] }, { from: [{ source: { namespaces: ['a'] } }] }] })]);
    const policies = get(WEB80).http[0]!.rules.policies;
    expect(Object.keys(policies)).toEqual([id('closed'), id('open'), id('two'), id('two', 1)]);
    expect(policies[id('open')]).toEqual({ permissions: [ANY_PERMISSION], principals: [ANY_PRINCIPAL] });
    expect(policies[id('closed')]).toEqual({ permissions: [{ notRule: { any: true } }], principals: [{ notId: { any: true } }] });
  });

  it('reports what it cannot enforce by object and field: an ALLOW rule is dropped, a DENY rule matches without it', () => {
    const bad = { from: [{ source: { ipBlocks: ['not-an-ip'], namespaces: ['a'] } }], to: [{ operation: { methods: ['GET'], verbs: ['x'] } }], when: [{ key: 'experimental.envoy.filters.a.b[c]', values: ['x'] }, { key: 'request.nope', values: ['y'] }] };
    const { get, text } = build([ap('allow', { targetRefs: [REF.web], rules: [bad, {}] }), ap('deny', { targetRefs: [REF.web], action: 'DENY', rules: [bad] })]);
    expect(text).toEqual(expect.arrayContaining([
      expect.stringMatching(/^AuthorizationPolicy\/allow: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: invalid value "not-an-ip".*ALLOW rule dropped/),
      expect.stringMatching(/^AuthorizationPolicy\/allow: spec\.rules\[0\]\.to\[0\]\.operation\.verbs: unknown field/),
      expect.stringMatching(/^AuthorizationPolicy\/allow: spec\.rules\[0\]\.when\[0\]\.key: experimental attribute/),
      expect.stringMatching(/^AuthorizationPolicy\/allow: spec\.rules\[0\]\.when\[1\]\.key: unknown condition key request\.nope/),
      expect.stringMatching(/^AuthorizationPolicy\/deny: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: .*the DENY rule matches on its other fields/),
    ]));
    const [deny, allow] = get(WEB80).http;
    expect(Object.keys(allow!.rules.policies)).toEqual([id('allow', 1)]);
    expect(deny!.rules).toEqual({
      action: 'DENY',
      policies: { [id('deny')]: { permissions: [andP([or([{ header: { name: ':method', stringMatch: { exact: 'GET' } } }])])], principals: [andI([orIds([authn({ safeRegex: { regex: '.*/ns/a/.*' } })])])] } },
    });
  });

  it('fails closed at the spec level: unknown field, unknown action, malformed rules', () => {
    const { get, text } = build([
      ap('extra', { targetRefs: [REF.web], rules: [{}], mystery: true }),
      ap('weird', { targetRefs: [REF.api], action: 'MAYBE', rules: [{ to: [{ operation: { paths: ['/x'] } }] }] }),
    ]);
    expect(text).toContain('AuthorizationPolicy/extra: spec.mystery: unknown field: an ALLOW policy allows nothing, other actions ignore it');
    expect(text).toContain('AuthorizationPolicy/weird: spec.action: unknown action "MAYBE": enforced as DENY of everything it targets');
    // Present and empty: the ALLOW filter denies everything no other ALLOW policy allows.
    expect(get(WEB80).http[0]!.rules).toEqual({});
    expect(get(`api.${NS}.svc.cluster.local:80`).http[0]!.rules).toEqual({ action: 'DENY', policies: { [id('weird')]: { permissions: [{ any: true }], principals: [{ any: true }] } } });
  });
});

describe('AuthorizationPolicy on a waypoint: actions and attachment', () => {
  it('writes one RBAC filter per action in istiod order (AUDIT as LOG, DENY, ALLOW), dry-run as shadow rules', () => {
    const rule = [{ to: [{ operation: { ports: ['80'] } }] }];
    const { get } = build([
      ap('a', { targetRefs: [REF.gw], rules: rule }),
      ap('d', { targetRefs: [REF.gw], action: 'DENY', rules: rule }),
      ap('l', { targetRefs: [REF.gw], action: 'AUDIT', rules: rule }),
      ap('dry', { targetRefs: [REF.gw], action: 'DENY', rules: rule }, { annotations: { 'istio.io/dry-run': 'true' } }),
    ]);
    const gw = get(GW);
    expect(gw.http.map((f) => [f.name, f.rules?.action ?? 'ALLOW', Object.keys(f.rules?.policies ?? {}), Object.keys(f.shadowRules?.policies ?? {}), f.shadowRulesStatPrefix])).toEqual([
      ['envoy.filters.http.rbac', 'LOG', [id('l')], [], 'istio_dry_run_allow_'],
      ['envoy.filters.http.rbac', 'DENY', [id('d')], [id('dry')], 'istio_dry_run_deny_'],
      ['envoy.filters.http.rbac', 'ALLOW', [id('a')], [], 'istio_dry_run_allow_'],
    ]);
    expect(gw.tcp.map((f) => [f.name, f['@type'], f.statPrefix, f.rules?.action ?? 'ALLOW'])).toEqual([
      ['envoy.filters.network.rbac', 'envoy.extensions.filters.network.rbac.v3.RBAC', 'tcp.', 'LOG'],
      ['envoy.filters.network.rbac', 'envoy.extensions.filters.network.rbac.v3.RBAC', 'tcp.', 'DENY'],
      ['envoy.filters.network.rbac', 'envoy.extensions.filters.network.rbac.v3.RBAC', 'tcp.', 'ALLOW'],
    ]);
    // The Gateway's policies are on its own listener, not on the service ports.
    expect(get(WEB80).http).toEqual([]);
  });

  it('puts each policy on the listeners of what it targets: Gateway, Service, ServiceEntry', () => {
    const { get, text } = build([
      ap('to-web', { targetRefs: [REF.web], rules: [{}] }),
      ap('to-se', { targetRefs: [REF.se], action: 'DENY', rules: [{}] }),
      ap('to-gw', { targetRefs: [REF.gw, REF.api], action: 'AUDIT', rules: [{}] }),
      ap('to-ghost', { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'ghost' }], rules: [{}] }),
    ]);
    const names = (l: { http: Msg[] }) => l.http.flatMap((f) => Object.keys(f.rules?.policies ?? {}));
    expect(names(get(WEB80))).toEqual([id('to-web')]);
    expect(names(get(`ext.example.com:80`))).toEqual([id('to-se')]);
    expect(names(get(GW))).toEqual([id('to-gw')]);
    expect(names(get(`api.${NS}.svc.cluster.local:80`))).toEqual([id('to-gw')]);
    expect(text).toContain(`AuthorizationPolicy/to-ghost: spec.targetRefs: Gateway ${NS}/ghost does not exist (yet): attached when it does`);
  });

  it('TCP ports: an ALLOW rule with an HTTP field is dropped, a DENY rule drops the field (denies more)', () => {
    const { get, text } = build([
      ap('allow', { targetRefs: [REF.db, REF.web], rules: [{ to: [{ operation: { paths: ['/x'] } }] }, { to: [{ operation: { ports: ['5432'] } }] }] }),
      ap('deny', { targetRefs: [REF.db, REF.web], action: 'DENY', rules: [{ from: [{ source: { namespaces: ['evil'], requestPrincipals: ['*'] } }], to: [{ operation: { methods: ['POST'] } }] }] }),
    ]);
    const db = get(DB);
    expect(db.hasHcm).toBe(false);
    expect(db.tcp.map((f) => f.name)).toEqual(['envoy.filters.network.rbac', 'envoy.filters.network.rbac']);
    expect(db.tcp[0]!.rules).toEqual({ action: 'DENY', policies: { [id('deny')]: { permissions: [ANY_PERMISSION], principals: [andI([orIds([authn({ safeRegex: { regex: '.*/ns/evil/.*' } })])])] } } });
    expect(Object.keys(db.tcp[1]!.rules.policies)).toEqual([id('allow', 1)]);
    expect(text).toContain('AuthorizationPolicy/allow: spec.rules[0].to[0].operation.paths: paths is an HTTP attribute, not seen on a TCP port: ALLOW rule dropped, it never matches');
    expect(text).toContain('AuthorizationPolicy/deny: spec.rules[0].to[0].operation.methods: methods is an HTTP attribute, not seen on a TCP port: ignored, the DENY rule matches on its other fields');
    // An auto port has both: HTTP with the whole rule, the default chain with the TCP form.
    const auto = get(WEB_AUTO);
    expect(Object.keys(auto.http[1]!.rules.policies)).toEqual([id('allow'), id('allow', 1)]);
    expect(Object.keys(auto.tcp[1]!.rules.policies)).toEqual([id('allow', 1)]);
  });
});

const GRPC = { name: 'grpc-authz', envoyExtAuthzGrpc: { service: 'authz/ext-authz.authz.svc.cluster.local', port: 9000, timeout: '0.5s', failOpen: true, statusOnError: '503', includeRequestBodyInCheck: { maxRequestBytes: 4096, allowPartialMessage: true } } };
const HTTP = {
  name: 'http-authz',
  envoyExtAuthzHttp: {
    service: 'ext-authz.authz.svc.cluster.local', port: '8000', pathPrefix: '/check', includeRequestHeadersInCheck: ['x-user', 'x-pre-*', '*-suffix'], includeAdditionalHeadersInCheck: { 'x-b': 'two', 'x-a': 'one' },
    headersToUpstreamOnAllow: ['x-auth-user'], headersToDownstreamOnAllow: ['set-cookie'], headersToDownstreamOnDeny: ['x-reason'], includeRequestBodyInCheck: { maxRequestBytes: 100, packAsBytes: true },
  },
};
const custom = (name: string, provider: string, rules: object[] = [{ to: [{ operation: { paths: ['/admin/*'] } }] }], ref: object = REF.web) => ap(name, { targetRefs: [ref], action: 'CUSTOM', provider: { name: provider }, rules });

describe('AuthorizationPolicy on a waypoint: CUSTOM', () => {
  it('gRPC and HTTP providers: shadow RBAC then ext_authz per provider, as istiod maps the mesh config', () => {
    const { get, text } = build([meshConfig([GRPC, HTTP]), custom('g', 'grpc-authz'), custom('h', 'http-authz', [{ to: [{ operation: { methods: ['POST'] } }] }]), ap('allow', { targetRefs: [REF.web], rules: [{}] })]);
    // web's undeclared port 9000 also relays what is not HTTP: there the gRPC provider fails closed (see the TCP test).
    expect(text).toEqual([expect.stringMatching(/^AuthorizationPolicy\/g: spec\.provider\.name: provider "grpc-authz" is a gRPC authorizer/)]);
    const http = get(WEB80).http;
    expect(http.map((f) => f.name)).toEqual(['envoy.filters.http.rbac', 'envoy.filters.http.ext_authz', 'envoy.filters.http.rbac', 'envoy.filters.http.ext_authz', 'envoy.filters.http.rbac']);
    expect(http[0]).toMatchObject({ shadowRules: { action: 'DENY', policies: { [`istio-ext-authz-grpc-authz-${id('g')}`]: {} } }, shadowRulesStatPrefix: 'istio_ext_authz_' });
    expect(http[0]!.rules).toBeUndefined();
    const enabled = (p: string) => ({ filter: 'envoy.filters.http.rbac', path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }], value: { stringMatch: { prefix: `istio-ext-authz-${p}` } } });
    expect(http[1]).toEqual({
      name: 'envoy.filters.http.ext_authz',
      '@type': 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
      grpcService: { envoyGrpc: { clusterName: 'outbound|9000||ext-authz.authz.svc.cluster.local', authority: 'ext-authz.authz.svc.cluster.local' }, timeout: { nanos: 500000000 } },
      failureModeAllow: true,
      statusOnError: { code: 'ServiceUnavailable' },
      transportApiVersion: 'V3',
      filterEnabledMetadata: enabled('grpc-authz'),
      withRequestBody: { maxRequestBytes: 4096, allowPartialMessage: true },
    });
    expect(Object.keys(http[2]!.shadowRules.policies)).toEqual([`istio-ext-authz-http-authz-${id('h')}`]);
    const ci = (m: Msg) => ({ ...m, ignoreCase: true });
    expect(http[3]).toEqual({
      name: 'envoy.filters.http.ext_authz',
      '@type': 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
      httpService: {
        serverUri: { uri: 'http://ext-authz.authz.svc.cluster.local', cluster: 'outbound|8000||ext-authz.authz.svc.cluster.local', timeout: { seconds: 600 } },
        pathPrefix: '/check',
        authorizationRequest: { headersToAdd: [{ key: 'x-a', value: 'one' }, { key: 'x-b', value: 'two' }] },
        authorizationResponse: { allowedUpstreamHeaders: { patterns: [ci({ exact: 'x-auth-user' })] }, allowedClientHeaders: { patterns: [ci({ exact: 'x-reason' })] }, allowedClientHeadersOnSuccess: { patterns: [ci({ exact: 'set-cookie' })] } },
      },
      allowedHeaders: { patterns: [ci({ exact: 'x-user' }), ci({ prefix: 'x-pre-' }), ci({ suffix: '-suffix' })] },
      transportApiVersion: 'V3',
      filterEnabledMetadata: enabled('http-authz'),
      withRequestBody: { maxRequestBytes: 100, packAsBytes: true },
    });
    // failOpen is off unless asked: failure_mode_allow left at false.
    expect(http[3]!.failureModeAllow).toBeUndefined();
    expect(http[4]!.rules.policies).toHaveProperty([id('allow')]);
  });

  it('an unknown provider, or one that cannot be translated, denies what the rules match and is reported', () => {
    const broken = { name: 'broken', envoyExtAuthzHttp: { service: 'x.y.svc.cluster.local', port: 70000, statusOnError: '999', failOpen: true, surprise: 1 } };
    const { get, text } = build([meshConfig([broken]), custom('u', 'nowhere'), custom('b', 'broken'), ap('n', { targetRefs: [REF.web], action: 'CUSTOM', rules: [{}] })]);
    const http = get(WEB80).http;
    expect(http.map((f) => [f.name, f.rules?.action, Object.keys(f.rules?.policies ?? {})])).toEqual([
      ['envoy.filters.http.rbac', 'DENY', [`istio-ext-authz--${id('n')}-deny-due-to-bad-CUSTOM-action`]],
      ['envoy.filters.http.rbac', 'DENY', [`istio-ext-authz-broken-${id('b')}-deny-due-to-bad-CUSTOM-action`]],
      ['envoy.filters.http.rbac', 'DENY', [`istio-ext-authz-nowhere-${id('u')}-deny-due-to-bad-CUSTOM-action`]],
    ]);
    expect(http[2]!.rules.policies[`istio-ext-authz-nowhere-${id('u')}-deny-due-to-bad-CUSTOM-action`]).toEqual({ permissions: [andP([or([{ urlPath: { path: { prefix: '/admin/' } } }])])], principals: [ANY_PRINCIPAL] });
    expect(text).toContain('AuthorizationPolicy/u: spec.provider.name: provider "nowhere" cannot be used (no extension provider "nowhere" in the mesh config (ConfigMap istio-system/istio)): requests (and connections) its rules match are denied');
    expect(text).toContainEqual(expect.stringMatching(/^AuthorizationPolicy\/b: spec\.provider\.name: provider "broken" cannot be used \(surprise: unknown field; port: must be in 1-65535, found 70000; statusOnError: unsupported status "999"\)/));
    expect(text).toContainEqual(expect.stringMatching(/^AuthorizationPolicy\/n: spec\.provider\.name: CUSTOM needs a provider name/));
  });

  it('CUSTOM source attributes Istio refuses are dropped, so the authorizer is asked more, not less', () => {
    const { get, text } = build([meshConfig([GRPC]), custom('c', 'grpc-authz', [{ from: [{ source: { namespaces: ['a'], ipBlocks: ['10.0.0.0/8'] } }], when: [{ key: 'request.auth.claims[x]', values: ['y'] }] }])]);
    expect(text).toContain('AuthorizationPolicy/c: spec.rules[0].from[0].source.namespaces: namespaces is not supported with action CUSTOM: ignored, the CUSTOM rule matches on its other fields');
    expect(get(WEB80).http[0]!.shadowRules.policies[`istio-ext-authz-grpc-authz-${id('c')}`].principals).toEqual([andI([orIds([{ directRemoteIp: { addressPrefix: '10.0.0.0', prefixLen: { value: 8 } } }])])]);
  });

  it('reports what istiod would refuse or ignore: selector next to targetRefs, dry-run on CUSTOM, a provider on another action', () => {
    const { get, text } = build([
      meshConfig([{ name: 'old-http', envoyExtAuthzHttp: { service: 'authz/a.authz.svc.cluster.local', port: 80, includeHeadersInCheck: ['cookie'], timeout: '2m' } }, { name: 'Upper', envoyExtAuthzGrpc: { service: 'a.b', port: 1 } }]),
      ap('both', { targetRefs: [REF.web], selector: { matchLabels: { app: 'web' } }, rules: [{}] }),
      ap('dry', { targetRefs: [REF.web], action: 'CUSTOM', provider: { name: 'old-http' }, rules: [{}] }, { annotations: { 'istio.io/dry-run': 'true' } }),
      ap('prov', { targetRefs: [REF.web], action: 'DENY', provider: { name: 'old-http' }, rules: [{}] }),
      custom('upper', 'Upper', [{}], REF.api),
    ]);
    expect(text).toEqual(expect.arrayContaining([
      'AuthorizationPolicy/both: spec.selector: only one of selector or targetRefs may be set: the selector is ignored at the waypoint',
      'AuthorizationPolicy/dry: metadata.annotations.istio.io/dry-run: dry run is not supported for CUSTOM by weft: enforced',
      'AuthorizationPolicy/prov: spec.provider: only used with action CUSTOM: ignored',
      'AuthorizationPolicy/dry: spec.provider.name: provider "old-http" cannot be used (timeout: expected a duration such as "10s" or "0.5s", found "2m"): requests (and connections) its rules match are denied',
    ]));
    expect(text).toContainEqual(expect.stringMatching(/^AuthorizationPolicy\/upper: spec\.provider\.name: provider "Upper" cannot be used \(name "Upper": must be a DNS label/));
    expect(get(WEB80).http[0]!.rules.action).toBe('DENY');
    expect(get(`api.${NS}.svc.cluster.local:80`).http[0]!.rules.action).toBe('DENY');
  });

  it('the deprecated includeHeadersInCheck is used when includeRequestHeadersInCheck is not set', () => {
    const { get, problems } = build([meshConfig([{ name: 'old-http', envoyExtAuthzHttp: { service: 'a.authz.svc.cluster.local', port: 80, includeHeadersInCheck: ['cookie', 'x-*'], failOpen: false } }]), custom('c', 'old-http', [{}], REF.api)]);
    expect(problems).toEqual([]);
    const ext = get(`api.${NS}.svc.cluster.local:80`).http[1]!;
    expect(ext.allowedHeaders).toEqual({ patterns: [{ exact: 'cookie', ignoreCase: true }, { prefix: 'x-', ignoreCase: true }] });
    expect(ext.httpService).toEqual({ serverUri: { uri: 'http://a.authz.svc.cluster.local', cluster: 'outbound|80||a.authz.svc.cluster.local', timeout: { seconds: 600 } } });
    expect(ext.failureModeAllow).toBeUndefined();
    expect(ext.statusOnError).toBeUndefined();
  });

  it('on TCP: an HTTP provider is left out (as istiod), a gRPC or unknown one denies the matched connections', () => {
    const { get, text } = build([meshConfig([GRPC, HTTP]), custom('g', 'grpc-authz', undefined, REF.db), custom('h', 'http-authz', undefined, REF.db), custom('u', 'nowhere', undefined, REF.db)]);
    const db = get(DB);
    expect(db.tcp.map((f) => [f.name, f.statPrefix, f.rules?.action, Object.keys(f.rules?.policies ?? {})])).toEqual([
      ['envoy.filters.network.rbac', 'tcp.', 'DENY', [`istio-ext-authz-grpc-authz-${id('g')}-deny-due-to-bad-CUSTOM-action`]],
      ['envoy.filters.network.rbac', 'tcp.', 'DENY', [`istio-ext-authz-nowhere-${id('u')}-deny-due-to-bad-CUSTOM-action`]],
    ]);
    // The path is an HTTP attribute: on TCP the rule matches every connection.
    expect(db.tcp[0]!.rules.policies[`istio-ext-authz-grpc-authz-${id('g')}-deny-due-to-bad-CUSTOM-action`].permissions).toEqual([ANY_PERMISSION]);
    expect(text).toContainEqual(expect.stringMatching(/^AuthorizationPolicy\/g: spec\.provider\.name: provider "grpc-authz" is a gRPC authorizer and weft's waypoint has no network ext_authz/));
  });
});

describe('AuthorizationPolicy on a waypoint: hostile input', () => {
  it('regex metacharacters in values are escaped, and literal matchers keep them as data', () => {
    const { get, problems } = build([
      ap('meta', {
        targetRefs: [REF.web],
        action: 'DENY',
        rules: [{ from: [{ source: { namespaces: ['a.b(c)|d*'], principals: ['*.+?[x]'], serviceAccounts: undefined } }], to: [{ operation: { hosts: ['(.*)'], paths: ['/a.*b'] } }], when: [{ key: 'source.serviceAccount', values: ['n$/s^'] }] }],
      }),
    ]);
    expect(problems).toEqual([]);
    const p = get(WEB80).http[0]!.rules.policies[id('meta')];
    expect(p.principals[0].andIds.ids).toEqual([
      orIds([authn({ safeRegex: { regex: 'spiffe://.*\\.\\+\\?\\[x\\]' } })]),
      orIds([authn({ safeRegex: { regex: '.*/ns/a\\.b\\(c\\)\\|d.*/.*' } })]),
      orIds([authn({ safeRegex: { regex: 'spiffe://.+/ns/n\\$/(.+/|)sa/s\\^(/.+)?' } })]),
    ]);
    expect(p.permissions[0].andRules.rules).toEqual([or([{ header: { name: ':authority', stringMatch: { exact: '(.*)', ignoreCase: true } } }]), or([{ urlPath: { path: { exact: '/a.*b' } } }])]);
    // Each escaped regex still matches only its literal (RE2 and ECMAScript agree on these escapes).
    expect(new RegExp('^.*/ns/a\\.b\\(c\\)\\|d.*/.*$').test('spiffe://td/ns/a.b(c)|dx/sa/y')).toBe(true);
    expect(new RegExp('^.*/ns/a\\.b\\(c\\)\\|d.*/.*$').test('spiffe://td/ns/aXb(c)|dx/sa/y')).toBe(false);
  });

  it('a huge policy is translated whole, an over-long value is refused (fail closed), malformed templates are refused', () => {
    const many = Array.from({ length: 2000 }, (_, i) => `/p${i}/*`);
    const rules = Array.from({ length: 50 }, () => ({ to: [{ operation: { paths: many } }] }));
    const { get, text } = build([
      ap('huge', { targetRefs: [REF.web], action: 'DENY', rules }),
      ap('long', { targetRefs: [REF.api], rules: [{ to: [{ operation: { hosts: ['x'.repeat(100_000)] } }] }, { to: [{ operation: { paths: ['/a/{**}/b/{**}'] } }] }, { to: [{ operation: { paths: ['/{x}'] } }] }] }),
    ]);
    const huge = get(WEB80).http[0]!.rules.policies;
    expect(Object.keys(huge)).toHaveLength(50);
    expect(huge[id('huge', 49)].permissions[0].andRules.rules[0].orRules.rules).toHaveLength(2000);
    expect(text).toContain('AuthorizationPolicy/long: spec.rules[0].to[0].operation.hosts[0]: longer than 4096 characters: ALLOW rule dropped, it never matches');
    expect(text).toContain('AuthorizationPolicy/long: spec.rules[1].to[0].operation.paths[0]: invalid value "/a/{**}/b/{**}": invalid path: {**} is not the last operator: ALLOW rule dropped, it never matches');
    expect(text).toContainEqual(expect.stringMatching(/long: spec\.rules\[2\]\.to\[0\]\.operation\.paths\[0\]: .*beyond a supported path template/));
    expect(get(`api.${NS}.svc.cluster.local:80`).http[0]!.rules).toEqual({});
    // Problems are reported once per policy, not once per listener.
    expect(text.filter((t) => t.includes('longer than 4096'))).toHaveLength(1);
  });
});
