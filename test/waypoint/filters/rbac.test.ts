import { describe, expect, it } from 'vitest';
import { mergeFilters, STAGE, type ConnectionFacts, type FilterRequest, type HttpFilter, type NetworkFilter } from '../../../src/waypoint/filters/chain.ts';
import { compileRbacHttp } from '../../../src/waypoint/filters/rbac/http.ts';
import { compileRbacNetwork } from '../../../src/waypoint/filters/rbac/network.ts';
import { decodeEnvoy, TYPE_LISTENER } from '../../../src/waypoint/xds/envoy.ts';
import { compileListener } from '../../../src/waypoint/xds/compile.ts';
import { buildListener } from '../../../src/control/xds/envoy/listeners.ts';
import {
  andIds, andRules, encodeHttp, encodeNetwork, httpFilter, method, networkFilter, orIds, orRules, pathPrefix, policy, policyId, port, RBAC_HTTP, RBAC_NETWORK, rbacConfig, source,
  uriTemplate, type Obj,
} from './rbac-fixtures.ts';
import { anyMessage } from '../../../src/api/protos.ts';

const CLIENT = 'spiffe://cluster.local/ns/conf/sa/client';
const OTHER = 'spiffe://cluster.local/ns/other/sa/x';

const http = (config: Obj): HttpFilter => {
  const f = compileRbacHttp(decodeEnvoy(RBAC_HTTP, encodeHttp(config)), 'rbac');
  if (!f) throw new Error('no filter');
  return f;
};
const net = (config: Obj): NetworkFilter => {
  const f = compileRbacNetwork(decodeEnvoy(RBAC_NETWORK, encodeNetwork(config)), 'rbac');
  if (!f) throw new Error('no filter');
  return f;
};
const refusal = (config: Obj): string => {
  try {
    compileRbacHttp(decodeEnvoy(RBAC_HTTP, encodeHttp(config)), 'rbac');
  } catch (e) {
    return (e as Error).message;
  }
  return 'compiled';
};

function req(o: Partial<FilterRequest> = {}): FilterRequest {
  const url = o.url ?? '/api/items?x=1';
  return {
    method: 'GET', url, path: url.split('?')[0]!, host: 'web.conf.svc.cluster.local', scheme: 'http', protocol: 'HTTP/1.1', headers: {},
    peerPrincipal: CLIENT, peerIp: '10.10.0.7', peerAddress: '10.10.0.7:40000', destination: '10.96.0.20:80', grpc: false, metadata: new Map(), ...o,
  };
}
const conn = (o: Partial<ConnectionFacts> = {}): ConnectionFacts => ({
  peerPrincipal: CLIENT, peerIp: '10.10.0.7', peerAddress: '10.10.0.7:40000', destination: '10.96.0.30:7000', destinationIp: '10.96.0.30', port: 7000, ...o,
});

/** Whether one permission (with any principal) matches, through a DENY filter. */
const permits = (perm: Obj, r: FilterRequest = req()) => http(rbacConfig('DENY', { p: policy([perm]) })).decode(r) !== undefined;
/** Whether one principal (with any permission) matches. */
const identifies = (id: Obj, r: FilterRequest = req()) => http(rbacConfig('DENY', { p: policy([{ any: true }], [id]) })).decode(r) !== undefined;

describe('RBAC actions', () => {
  const allowGetApi = rbacConfig('ALLOW', { [policyId('conf', 'get-api')]: policy([andRules(orRules(method('GET')), orRules(pathPrefix('/api/')))], [andIds(orIds(source(CLIENT)))]) });

  it('ALLOW lets a match through and answers anything else with Envoy\'s 403', () => {
    const f = http(allowGetApi);
    expect(f.stage).toBe(STAGE.allow);
    expect(f.decode(req())).toBeUndefined();
    expect(f.decode(req({ method: 'POST' }))).toEqual({ status: 403, body: 'RBAC: access denied', flags: 'RBAC', details: 'rbac_access_denied_matched_policy[none]', policy: 'ns[conf]-policy[get-api]' });
    expect(f.decode(req({ peerPrincipal: OTHER }))).toMatchObject({ status: 403 });
    expect(f.decode(req({ url: '/apix' }))).toMatchObject({ status: 403 });
  });

  it('ALLOW with no policies denies everything; no rules at all enforces nothing', () => {
    expect(http({ rules: {} }).decode(req())).toMatchObject({ status: 403, details: 'rbac_access_denied_matched_policy[none]' });
    expect(compileRbacHttp(decodeEnvoy(RBAC_HTTP, encodeHttp({})), 'rbac')).toBeUndefined();
  });

  it('DENY names the first matching policy in name order (Envoy keeps them in a sorted map)', () => {
    const f = http(rbacConfig('DENY', { 'ns[conf]-policy[b]-rule[0]': policy([{ any: true }]), 'ns[conf]-policy[a]-rule[1]': policy([method('GET')]) }));
    expect(f.stage).toBe(STAGE.deny);
    expect(f.decode(req())).toMatchObject({ details: 'rbac_access_denied_matched_policy[ns[conf]-policy[a]-rule[1]]' });
    expect(f.decode(req({ method: 'PUT' }))).toMatchObject({ details: 'rbac_access_denied_matched_policy[ns[conf]-policy[b]-rule[0]]' });
  });

  it('LOG never denies, and marks the request for the access log as Envoy does', () => {
    const f = http(rbacConfig('LOG', { audit: policy([method('DELETE')]) }));
    expect(f.stage).toBe(STAGE.audit);
    const r = req({ method: 'DELETE' });
    expect(f.decode(r)).toBeUndefined();
    expect(r.metadata.get('envoy.common')).toEqual({ access_log_hint: true });
    const other = req();
    expect(f.decode(other)).toBeUndefined();
    expect(other.metadata.size).toBe(0);
  });

  it('shadow rules never deny: they record the result under the stat prefix (Istio\'s CUSTOM action)', () => {
    const f = http({ shadowRules: { action: 'DENY', policies: { 'istio-ext-authz-ns[conf]-policy[ext]-rule[0]': policy([pathPrefix('/ext')]) } }, shadowRulesStatPrefix: 'istio_ext_authz_' });
    expect(f.stage).toBe(STAGE.customMatch);
    const hit = req({ url: '/ext/1' });
    expect(f.decode(hit)).toBeUndefined();
    expect(hit.metadata.get('envoy.filters.http.rbac')).toEqual({
      istio_ext_authz_shadow_effective_policy_id: 'istio-ext-authz-ns[conf]-policy[ext]-rule[0]',
      istio_ext_authz_shadow_engine_result: 'denied',
    });
    const miss = req();
    f.decode(miss);
    expect(miss.metadata.get('envoy.filters.http.rbac')).toEqual({ istio_ext_authz_shadow_engine_result: 'allowed' });
  });

  it('merges filters of one action into the union of their policies; never DENY with ALLOW, nor shadow filters', () => {
    const gw = http(rbacConfig('ALLOW', { gw: policy([pathPrefix('/gw')]) }));
    const svc = http(rbacConfig('ALLOW', { svc: policy([pathPrefix('/svc')]) }));
    const deny = http(rbacConfig('DENY', { d: policy([pathPrefix('/svc/admin')]) }));
    const shadow = http({ shadowRules: { policies: { s: policy([{ any: true }]) } } });
    const merged = mergeFilters({ http: [gw], network: [] }, { http: [svc, deny, shadow], network: [] });
    expect(merged.http.map((f) => f.stage)).toEqual([STAGE.customMatch, STAGE.deny, STAGE.allow]);
    const allow = merged.http[2]!;
    expect(allow.decode(req({ url: '/gw/1' }))).toBeUndefined();
    expect(allow.decode(req({ url: '/svc/1' }))).toBeUndefined();
    expect(allow.decode(req({ url: '/other' }))).toMatchObject({ status: 403 });
    expect(merged.http[1]!.decode(req({ url: '/svc/admin' }))).toMatchObject({ details: 'rbac_access_denied_matched_policy[d]' });
    // One name in both: matches when either does.
    const both = gw.merge!(http(rbacConfig('ALLOW', { gw: policy([pathPrefix('/more')]) })))!;
    expect(both.decode(req({ url: '/more' }))).toBeUndefined();
    expect(both.decode(req({ url: '/gw' }))).toBeUndefined();
    expect(gw.merge!(shadow)).toBeUndefined();
    expect(gw.merge!(deny)).toBeUndefined();
  });
});

describe('RBAC permissions', () => {
  it('header: every specifier, pseudo-headers, repeated values joined, and Envoy\'s rule for a missing header', () => {
    const h = (m: Obj) => ({ header: { name: 'x-env', ...m } });
    const r = req({ headers: { 'x-env': 'prod-eu' } });
    expect(permits(h({ stringMatch: { exact: 'prod-eu' } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { exact: 'PROD-EU', ignoreCase: true } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { prefix: 'prod' } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { suffix: '-eu' } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { contains: 'd-e' } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { safeRegex: { regex: 'prod-(eu|us)' } } }), r)).toBe(true);
    expect(permits(h({ stringMatch: { safeRegex: { regex: 'prod' } } }), r)).toBe(false); // full match
    expect(permits(h({ exactMatch: 'prod-eu' }), r)).toBe(true);
    expect(permits(h({ presentMatch: true }), r)).toBe(true);
    expect(permits(h({ presentMatch: true }), req())).toBe(false);
    expect(permits(h({ presentMatch: false }), req())).toBe(true);
    expect(permits(h({ stringMatch: { exact: 'prod-eu' }, invertMatch: true }), r)).toBe(false);
    expect(permits(h({ stringMatch: { exact: 'dev' }, invertMatch: true }), r)).toBe(true);
    // A missing header matches no string test, inverted or not, unless treated as empty.
    expect(permits(h({ stringMatch: { exact: 'dev' }, invertMatch: true }), req())).toBe(false);
    expect(permits(h({ stringMatch: { exact: 'dev' }, invertMatch: true, treatMissingHeaderAsEmpty: true }), req())).toBe(true);
    expect(permits(h({ presentMatch: true, invertMatch: true }), req())).toBe(true);
    expect(permits(h({ rangeMatch: { start: 1, end: 10 } }), req({ headers: { 'x-env': '9' } }))).toBe(true);
    expect(permits(h({ rangeMatch: { start: 1, end: 10 } }), req({ headers: { 'x-env': '10' } }))).toBe(false);
    expect(permits(h({ stringMatch: { exact: 'a,b' } }), req({ headers: { 'x-env': ['a', 'b'] as unknown as string } }))).toBe(true);
    expect(permits({ header: { name: ':authority', stringMatch: { prefix: 'web.conf' } } })).toBe(true);
    expect(permits({ header: { name: ':method', stringMatch: { exact: 'GET' } } })).toBe(true);
    expect(permits({ header: { name: ':path', stringMatch: { exact: '/api/items?x=1' } } })).toBe(true); // :path carries the query
    expect(permits({ header: { name: ':scheme', stringMatch: { exact: 'http' } } })).toBe(true);
  });

  it('url_path matches the path without the query; uri_template: * is one segment, ** any number', () => {
    expect(permits({ urlPath: { path: { exact: '/api/items' } } })).toBe(true);
    expect(permits({ urlPath: { path: { exact: '/API/ITEMS', ignoreCase: true } } })).toBe(true);
    expect(permits({ urlPath: { path: { exact: '/api/items?x=1' } } })).toBe(false);
    const t = (tmpl: string, path: string) =>
      permits(uriTemplate(tmpl), req({ url: path }));
    expect(t('/api/*/items', '/api/v1/items')).toBe(true);
    expect(t('/api/*/items', '/api/v1/v2/items')).toBe(false);
    expect(t('/api/*/items', '/api//items')).toBe(false);
    expect(t('/api/**', '/api/a/b/c')).toBe(true);
    expect(t('/api/**', '/api/')).toBe(true);
    expect(t('/api/**', '/other/a')).toBe(false);
    expect(t('/api/{id}/x', '/api/7/x')).toBe(true);
    expect(t('/**.mpd', '/content/1/manifest.mpd')).toBe(true);
    expect(t('/**.mpd', '/content/1/manifest.mp4')).toBe(false);
  });

  it('destination ip, port and port range are the original destination\'s (the CONNECT authority)', () => {
    expect(permits({ destinationIp: { addressPrefix: '10.96.0.0', prefixLen: { value: 16 } } })).toBe(true);
    expect(permits({ destinationIp: { addressPrefix: '10.97.0.0', prefixLen: { value: 16 } } })).toBe(false);
    expect(permits({ destinationIp: { addressPrefix: 'fd00::', prefixLen: { value: 8 } } }, req({ destination: '[fd00::1]:80' }))).toBe(true);
    expect(permits({ destinationIp: { addressPrefix: '10.96.0.0', prefixLen: { value: 16 } } }, req({ destination: '[fd00::1]:80' }))).toBe(false);
    expect(permits(port(80))).toBe(true);
    expect(permits(port(8080))).toBe(false);
    expect(permits({ destinationPortRange: { start: 80, end: 81 } })).toBe(true);
    expect(permits({ destinationPortRange: { start: 81, end: 90 } })).toBe(false);
  });

  it('metadata: string, list one_of, bool, present, null, invert, nested keys; own keys only', () => {
    const md = (path: string[], value: Obj, invert = false) => ({ metadata: { filter: 'istio_authn', path: path.map((key) => ({ key })), value, invert } });
    const r = req({
      metadata: new Map([['istio_authn', {
        'request.auth.principal': 'https://issuer/alice',
        'request.auth.audiences': ['web', 'api'],
        'request.auth.claims': { groups: ['admins'], nested: { deep: 'yes' }, verified: true, nothing: null },
      }]]),
    });
    expect(permits(md(['request.auth.principal'], { stringMatch: { exact: 'https://issuer/alice' } }), r)).toBe(true);
    expect(permits(md(['request.auth.audiences'], { listMatch: { oneOf: { stringMatch: { exact: 'api' } } } }), r)).toBe(true);
    expect(permits(md(['request.auth.audiences'], { listMatch: { oneOf: { stringMatch: { exact: 'db' } } } }), r)).toBe(false);
    expect(permits(md(['request.auth.claims', 'groups'], { listMatch: { oneOf: { stringMatch: { exact: 'admins' } } } }), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'nested', 'deep'], { stringMatch: { exact: 'yes' } }), r)).toBe(true);
    // A string claim read with list_match, as Istio writes every claim matcher (its authn filter lists string claims).
    expect(permits(md(['request.auth.claims', 'nested', 'deep'], { listMatch: { oneOf: { stringMatch: { exact: 'yes' } } } }), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'nested', 'deep'], { listMatch: { oneOf: { stringMatch: { exact: 'no' } } } }), r)).toBe(false);
    expect(permits(md(['request.auth.claims', 'verified'], { listMatch: { oneOf: { boolMatch: true } } }), r)).toBe(false);
    expect(permits(md(['request.auth.claims', 'verified'], { boolMatch: true }), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'nothing'], { nullMatch: {} }), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'missing'], { nullMatch: {} }), r)).toBe(false);
    expect(permits(md(['request.auth.claims', 'groups'], { presentMatch: true }), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'missing'], { presentMatch: true }), r)).toBe(false);
    expect(permits(md(['request.auth.claims', 'missing'], { presentMatch: true }, true), r)).toBe(true);
    expect(permits(md(['request.auth.claims', 'constructor'], { presentMatch: true }), r)).toBe(false);
    expect(permits(md(['request.auth.principal'], { stringMatch: { exact: 'x' } }), req())).toBe(false); // no JWT filter ran
  });

  it('requested_server_name: no TLS in the tunnel, so only a matcher of the empty name matches', () => {
    expect(permits({ requestedServerName: { exact: '' } })).toBe(true);
    expect(permits({ requestedServerName: { exact: 'web.example.com' } })).toBe(false);
    expect(permits({ requestedServerName: { safeRegex: { regex: '.*' } } })).toBe(true);
  });

  it('and, or and not nest', () => {
    expect(permits(andRules(method('GET'), pathPrefix('/api')))).toBe(true);
    expect(permits(andRules(method('GET'), pathPrefix('/x')))).toBe(false);
    expect(permits(orRules(method('PUT'), pathPrefix('/api')))).toBe(true);
    expect(permits({ notRule: method('GET') })).toBe(false);
    expect(permits({ notRule: { notRule: method('GET') } })).toBe(true);
    expect(permits(andRules(method('GET'), { notRule: orRules(pathPrefix('/x'), pathPrefix('/y')) }))).toBe(true);
  });
});

describe('RBAC principals', () => {
  it('authenticated matches the peer\'s URI SAN; without a name, any authenticated peer', () => {
    expect(identifies(source(CLIENT))).toBe(true);
    expect(identifies(source(CLIENT), req({ peerPrincipal: OTHER }))).toBe(false);
    expect(identifies({ authenticated: { principalName: { safeRegex: { regex: '.*/ns/conf/.*' } } } })).toBe(true);
    expect(identifies({ authenticated: {} })).toBe(true);
    expect(identifies({ authenticated: {} }, req({ peerPrincipal: '' }))).toBe(false);
  });

  it('direct_remote_ip, remote_ip and source_ip are the HBONE peer\'s (the original client) address', () => {
    for (const k of ['directRemoteIp', 'remoteIp', 'sourceIp']) {
      expect(identifies({ [k]: { addressPrefix: '10.10.0.0', prefixLen: { value: 24 } } })).toBe(true);
      expect(identifies({ [k]: { addressPrefix: '10.10.0.8', prefixLen: { value: 32 } } })).toBe(false);
    }
    expect(identifies({ directRemoteIp: { addressPrefix: '10.10.0.7', prefixLen: { value: 32 } } }, req({ peerIp: '::ffff:10.10.0.7' }))).toBe(true);
  });

  it('header, url_path, metadata, and the set forms', () => {
    expect(identifies({ header: { name: 'x-user', stringMatch: { exact: 'bob' } } }, req({ headers: { 'x-user': 'bob' } }))).toBe(true);
    expect(identifies({ urlPath: { path: { prefix: '/api/' } } })).toBe(true);
    expect(identifies({ metadata: { filter: 'istio_authn', path: [{ key: 'request.auth.principal' }], value: { presentMatch: true } } })).toBe(false);
    expect(identifies(andIds(source(CLIENT), { notId: source(OTHER) }))).toBe(true);
    expect(identifies(orIds(source(OTHER), { notId: { any: true } }))).toBe(false);
  });
});

describe('network RBAC', () => {
  it('decides a connection on the peer identity, address and destination; request matchers see no request', () => {
    const f = net(rbacConfig('ALLOW', { p: policy([port(7000)], [source(CLIENT)]) }));
    expect(f.stage).toBe(STAGE.allow);
    expect(f.onConnect(conn())).toBeUndefined();
    expect(f.onConnect(conn({ peerPrincipal: OTHER }))).toEqual({ reason: 'rbac_access_denied_matched_policy[none]', flags: 'RBAC' });
    expect(f.onConnect(conn({ destination: '10.96.0.30:7001' }))).toMatchObject({ flags: 'RBAC' });
    const httpOnly = net(rbacConfig('ALLOW', { p: policy([orRules(method('GET'), pathPrefix('/'), uriTemplate('/**'))]) }));
    expect(httpOnly.onConnect(conn())).toMatchObject({ flags: 'RBAC' });
    const deny = net(rbacConfig('DENY', { 'ns[conf]-policy[d]-rule[0]': policy([{ destinationIp: { addressPrefix: '10.96.0.30', prefixLen: { value: 32 } } }]) }));
    expect(deny.onConnect(conn())).toEqual({ reason: 'rbac_access_denied_matched_policy[ns[conf]-policy[d]-rule[0]]', policy: 'ns[conf]-policy[d]-rule[0]', flags: 'RBAC' });
    // Merged like the HTTP filters.
    const merged = f.merge!(net(rbacConfig('ALLOW', { q: policy([port(7001)]) })))!;
    expect(merged.onConnect(conn({ destination: '10.96.0.30:7001', peerPrincipal: OTHER }))).toBeUndefined();
    expect(f.merge!(deny)).toBeUndefined();
  });

  it('is compiled from a Listener\'s TCP chain, as is the HTTP filter from its http_filters', () => {
    const l = compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 7000, 'tcp', { httpFilters: [], networkFilters: [networkFilter(rbacConfig('DENY', { p: policy([{ any: true }]) }))] })));
    expect(l.filters.network).toHaveLength(1);
    const h = compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 80, 'http', { httpFilters: [httpFilter(rbacConfig('ALLOW', { p: policy([{ any: true }]) }))], networkFilters: [] })));
    expect(h.filters.http).toHaveLength(1);
  });
});

describe('RBAC refusals (a NACK naming the field)', () => {
  const deny = (perm: Obj, principal: Obj = { any: true }) => rbacConfig('DENY', { p: policy([perm], [principal]) });

  it('refuses what it cannot enforce', () => {
    expect(refusal(deny({ any: true }, { filterState: { key: 'k', stringMatch: { exact: 'v' } } }))).toBe('rbac.rules.policies[p].principals[0].filter_state: not supported by the waypoint');
    expect(refusal(deny({ matcher: { name: 'm', typedConfig: anyMessage('type.googleapis.com/x', new Uint8Array()) } }))).toBe('rbac.rules.policies[p].permissions[0].matcher: not supported by the waypoint');
    expect(refusal({ matcher: {} })).toBe('rbac.matcher: matcher trees are not supported by the waypoint');
    expect(refusal({ shadowMatcher: {} })).toBe('rbac.shadow_matcher: matcher trees are not supported by the waypoint');
    expect(refusal({ rules: { action: 'DENY', auditLoggingOptions: { auditCondition: 'ON_DENY' } } })).toBe('rbac.rules.audit_logging_options: audit loggers are not supported by the waypoint');
    expect(refusal({ rules: { policies: { p: { ...policy([{ any: true }]), condition: { id: 1 } } } } })).toBe('rbac.rules.policies[p].condition: CEL conditions are not supported by the waypoint');
    expect(refusal(deny({}))).toBe('rbac.rules.policies[p].permissions[0]: empty (no rule set)');
    expect(refusal(deny({ any: false }))).toBe('rbac.rules.policies[p].permissions[0].any: must be true');
    expect(refusal(deny({ any: true }, { any: false }))).toBe('rbac.rules.policies[p].principals[0].any: must be true');
    expect(refusal(deny({ any: true }, {}))).toBe('rbac.rules.policies[p].principals[0]: empty (no identifier set)');
    expect(refusal({ rules: { policies: { p: { principals: [{ any: true }] } } } })).toBe('rbac.rules.policies[p].permissions: empty');
    expect(refusal(deny({ andRules: {} }))).toBe('rbac.rules.policies[p].permissions[0].and_rules.rules: empty');
    expect(refusal(deny({ urlPath: {} }))).toBe('rbac.rules.policies[p].permissions[0].url_path: empty (no rule set)');
    expect(refusal(deny({ header: { name: 'x' , stringMatch: {} } }))).toMatch(/permissions\[0\]\.header\.string_match: no match_pattern/);
    expect(refusal(deny({ destinationIp: { addressPrefix: 'not-an-ip', prefixLen: { value: 8 } } }))).toMatch(/permissions\[0\]\.destination_ip: not-an-ip\/8 is not a CIDR range/);
    expect(refusal(deny({ destinationIp: { addressPrefix: '10.0.0.0', prefixLen: { value: 33 } } }))).toMatch(/prefix_len 33 out of range/);
    expect(refusal(deny({ uriTemplate: { name: 't', typedConfig: anyMessage('type.googleapis.com/google.protobuf.Empty', new Uint8Array()) } }))).toMatch(/permissions\[0\]\.uri_template\.typed_config: .*Empty is not a .*UriTemplateMatchConfig/);
    expect(refusal(deny(uriTemplate('/a/**/b')))).toMatch(/\*\* must be the last operator/);
    expect(refusal(deny({ metadata: { filter: 'istio_authn', path: [{ key: 'a' }], value: { doubleMatch: {} } } }))).toMatch(/metadata\.value\.double_match: empty/);
  });

  it('refuses a regex the guard refuses (no second checker: the route\'s)', () => {
    expect(refusal(deny({ header: { name: 'x', stringMatch: { safeRegex: { regex: '(a+)+$' } } } }))).toMatch(/permissions\[0\]\.header\.string_match\.safe_regex: regex refused: a repeated group/);
    expect(refusal(deny({ any: true }, { authenticated: { principalName: { safeRegex: { regex: '(?=x)' } } } }))).toMatch(/principal_name\.safe_regex: regex refused: lookaround/);
    expect(refusal(deny({ urlPath: { path: { safeRegex: { regex: 'a'.repeat(2000) } } } }))).toMatch(/url_path\.path\.safe_regex: regex longer than 1024/);
  });

  it('bounds nesting and size: deep not_rule chains and huge maps are refused, large ones served', () => {
    let deep: Obj = { any: true };
    for (let i = 0; i < 40; i++) deep = { notRule: deep };
    expect(refusal(deny(deep))).toMatch(/nested deeper than 32/);
    let ok: Obj = { any: true };
    for (let i = 0; i < 30; i++) ok = { notRule: ok };
    expect(permits(ok)).toBe(true); // an even number of nots
    const huge: Record<string, Obj> = {};
    for (let i = 0; i < 60_000; i++) huge[`p${i}`] = policy([port(i % 65535)]);
    expect(refusal(rbacConfig('ALLOW', huge))).toMatch(/more than 100000 permissions and principals in one filter/);
    const large: Record<string, Obj> = {};
    for (let i = 0; i < 5_000; i++) large[policyId('conf', `p${i}`)] = policy([pathPrefix(`/p${i}/`)], [source(CLIENT)]);
    const f = http(rbacConfig('ALLOW', large));
    expect(f.decode(req({ url: '/p4999/x' }))).toBeUndefined();
    expect(f.decode(req({ url: '/p5000/x' }))).toMatchObject({ status: 403 });
  });
});
