// Istio's documented AuthorizationPolicy / PeerAuthentication semantics, end to end: Kubernetes
// YAML through the control-plane translators into the agent's engine. Destination: foo/httpbin
// (app=httpbin, 10.0.1.10); default source bar/sleep over mTLS from 10.0.2.5 to port 8080.
import { describe, expect, it } from 'vitest';
import type { SpiffeId } from '../../../src/api/spiffe.ts';
import { id, world } from './harness.ts';

const ap = (name: string, ns: string, spec: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name}, namespace: ${ns} }
spec: ${spec}
---
`;
const pa = (name: string, ns: string, spec: string, created = '2024-01-01T00:00:00Z') => `apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: { name: ${name}, namespace: ${ns}, creationTimestamp: "${created}" }
spec: ${spec}
---
`;

const SLEEP = id('bar', 'sleep');
const PLAIN = undefined;

interface Case {
  name: string;
  yaml: string;
  from?: SpiffeId;
  srcIp?: string;
  dstIp?: string;
  port?: number;
  labels?: Record<string, string>;
  allowed: boolean;
  policy?: string;
  audit?: string[];
}

const cases: Case[] = [
  { name: 'no policy: allow', yaml: '', from: SLEEP, allowed: true },
  { name: 'allow-nothing (spec: {}) denies', yaml: ap('allow-nothing', 'foo', '{}'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/allow-nothing' },
  { name: 'allow-all (rules: [{}])', yaml: ap('allow-all', 'foo', '{ rules: [{}] }'), from: PLAIN, allowed: true, policy: 'foo/allow-all' },
  { name: 'deny-all', yaml: ap('deny-all', 'foo', '{ action: DENY, rules: [{}] }'), from: SLEEP, allowed: false, policy: 'foo/deny-all' },
  { name: 'DENY without rules denies nothing', yaml: ap('deny-none', 'foo', '{ action: DENY }'), from: SLEEP, allowed: true },
  { name: 'deny-all beats allow-all', yaml: ap('allow-all', 'foo', '{ rules: [{}] }') + ap('deny-all', 'foo', '{ action: DENY, rules: [{}] }'), from: SLEEP, allowed: false, policy: 'foo/deny-all' },

  // namespaces
  ...((): Case[] => {
    const y = ap('from-bar', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar] } }] }] }');
    return [
      { name: 'allow by namespace: match', yaml: y, from: SLEEP, allowed: true, policy: 'foo/from-bar' },
      { name: 'allow by namespace: other namespace', yaml: y, from: id('baz', 'sleep'), allowed: false, policy: 'no ALLOW policy matched: foo/from-bar' },
      { name: 'allow by namespace: plaintext has no namespace', yaml: y, from: PLAIN, allowed: false, policy: 'no ALLOW policy matched: foo/from-bar' },
    ];
  })(),
  { name: 'namespace prefix wildcard', yaml: ap('p', 'foo', '{ rules: [{ from: [{ source: { namespaces: ["ba*"] } }] }] }'), from: id('baz', 'x'), allowed: true, policy: 'foo/p' },
  { name: 'namespace suffix wildcard', yaml: ap('p', 'foo', '{ rules: [{ from: [{ source: { namespaces: ["*-prod"] } }] }] }'), from: id('pay-prod', 'x'), allowed: true, policy: 'foo/p' },
  ...((): Case[] => {
    const y = ap('not-foo', 'foo', '{ action: DENY, rules: [{ from: [{ source: { notNamespaces: [foo] } }] }] }');
    return [
      { name: 'notNamespaces DENY: other namespace denied', yaml: y, from: SLEEP, allowed: false, policy: 'foo/not-foo' },
      { name: 'notNamespaces DENY: same namespace allowed', yaml: y, from: id('foo', 'client'), allowed: true },
      { name: 'notNamespaces DENY: no identity is "not in foo"', yaml: y, from: PLAIN, allowed: false, policy: 'foo/not-foo' },
    ];
  })(),

  // principals
  ...((): Case[] => {
    const y = ap('deny-sleep', 'foo', '{ action: DENY, rules: [{ from: [{ source: { principals: [cluster.local/ns/bar/sa/sleep] } }] }] }');
    return [
      { name: 'deny by principal: match', yaml: y, from: SLEEP, allowed: false, policy: 'foo/deny-sleep' },
      { name: 'deny by principal: other SA', yaml: y, from: id('bar', 'other'), allowed: true },
      { name: 'deny by principal: other trust domain', yaml: y, from: id('bar', 'sleep', 'other.td'), allowed: true },
      { name: 'deny by principal: plaintext not matched', yaml: y, from: PLAIN, allowed: true },
    ];
  })(),
  { name: 'principal written with spiffe:// still matches', yaml: ap('p', 'foo', '{ rules: [{ from: [{ source: { principals: ["spiffe://cluster.local/ns/bar/sa/sleep"] } }] }] }'), from: SLEEP, allowed: true, policy: 'foo/p' },
  { name: 'principals "*" requires an identity', yaml: ap('authn', 'foo', '{ rules: [{ from: [{ source: { principals: ["*"] } }] }] }'), from: PLAIN, allowed: false, policy: 'no ALLOW policy matched: foo/authn' },
  { name: 'serviceAccounts ns/sa', yaml: ap('sa', 'foo', '{ rules: [{ from: [{ source: { serviceAccounts: [bar/sleep] } }] }] }'), from: SLEEP, allowed: true, policy: 'foo/sa' },
  { name: 'serviceAccounts bare sa means the policy namespace', yaml: ap('sa', 'foo', '{ rules: [{ from: [{ source: { serviceAccounts: [sleep] } }] }] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/sa' },
  { name: 'notServiceAccounts', yaml: ap('sa', 'foo', '{ action: DENY, rules: [{ from: [{ source: { notServiceAccounts: [bar/sleep] } }] }] }'), from: id('bar', 'x'), allowed: false, policy: 'foo/sa' },
  { name: 'source fields are AND-ed', yaml: ap('and', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar], ipBlocks: [10.9.0.0/16] } }] }] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/and' },
  { name: 'sources are OR-ed', yaml: ap('or', 'foo', '{ rules: [{ from: [{ source: { namespaces: [nope] } }, { source: { ipBlocks: [10.0.2.5] } }] }] }'), from: PLAIN, allowed: true, policy: 'foo/or' },

  // IP blocks
  ...((): Case[] => {
    const y = ap('cidr', 'foo', '{ rules: [{ from: [{ source: { ipBlocks: [10.0.2.0/24] } }] }] }');
    return [
      { name: 'ipBlocks: inside', yaml: y, srcIp: '10.0.2.5', allowed: true, policy: 'foo/cidr' },
      { name: 'ipBlocks: first address', yaml: y, srcIp: '10.0.2.0', allowed: true, policy: 'foo/cidr' },
      { name: 'ipBlocks: last address', yaml: y, srcIp: '10.0.2.255', allowed: true, policy: 'foo/cidr' },
      { name: 'ipBlocks: just past the end', yaml: y, srcIp: '10.0.3.0', allowed: false, policy: 'no ALLOW policy matched: foo/cidr' },
      { name: 'ipBlocks: just before the start', yaml: y, srcIp: '10.0.1.255', allowed: false, policy: 'no ALLOW policy matched: foo/cidr' },
      { name: 'ipBlocks: IPv4-mapped IPv6 source', yaml: y, srcIp: '::ffff:10.0.2.9', allowed: true, policy: 'foo/cidr' },
      { name: 'ipBlocks: IPv6 source never in an IPv4 block', yaml: y, srcIp: '2001:db8::1', allowed: false, policy: 'no ALLOW policy matched: foo/cidr' },
    ];
  })(),
  { name: 'ipBlocks: bare IP is /32', yaml: ap('one', 'foo', '{ rules: [{ from: [{ source: { ipBlocks: [10.0.2.5] } }] }] }'), srcIp: '10.0.2.6', allowed: false, policy: 'no ALLOW policy matched: foo/one' },
  ...((): Case[] => {
    const y = ap('v6', 'foo', '{ rules: [{ from: [{ source: { ipBlocks: ["2001:db8:1::/48"] } }] }] }');
    return [
      { name: 'IPv6 block: inside', yaml: y, srcIp: '2001:db8:1:ffff::1', allowed: true, policy: 'foo/v6' },
      { name: 'IPv6 block: outside', yaml: y, srcIp: '2001:db8:2::1', allowed: false, policy: 'no ALLOW policy matched: foo/v6' },
      { name: 'IPv6 block: IPv4 source', yaml: y, srcIp: '10.0.2.5', allowed: false, policy: 'no ALLOW policy matched: foo/v6' },
    ];
  })(),
  { name: '::/0 does not cover IPv4', yaml: ap('all6', 'foo', '{ action: DENY, rules: [{ from: [{ source: { ipBlocks: ["::/0"] } }] }] }'), srcIp: '10.0.2.5', allowed: true },
  { name: 'notIpBlocks DENY', yaml: ap('only-net', 'foo', '{ action: DENY, rules: [{ from: [{ source: { notIpBlocks: [10.0.0.0/16] } }] }] }'), srcIp: '192.168.1.1', allowed: false, policy: 'foo/only-net' },
  { name: 'remoteIpBlocks is the peer address at L4', yaml: ap('r', 'foo', '{ action: DENY, rules: [{ from: [{ source: { remoteIpBlocks: [10.0.2.0/24] } }] }] }'), srcIp: '10.0.2.5', allowed: false, policy: 'foo/r' },

  // ports
  ...((): Case[] => {
    const y = ap('port', 'foo', '{ rules: [{ to: [{ operation: { ports: ["8080"] } }] }] }');
    return [
      { name: 'ports: listed', yaml: y, port: 8080, allowed: true, policy: 'foo/port' },
      { name: 'ports: other', yaml: y, port: 9090, allowed: false, policy: 'no ALLOW policy matched: foo/port' },
    ];
  })(),
  { name: 'notPorts', yaml: ap('np', 'foo', '{ action: DENY, rules: [{ to: [{ operation: { notPorts: ["8080"] } }] }] }'), port: 9090, allowed: false, policy: 'foo/np' },
  { name: 'notPorts: the excepted port', yaml: ap('np', 'foo', '{ action: DENY, rules: [{ to: [{ operation: { notPorts: ["8080"] } }] }] }'), port: 8080, allowed: true },
  { name: 'from AND to', yaml: ap('ft', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar] } }], to: [{ operation: { ports: ["9090"] } }] }] }'), from: SLEEP, port: 8080, allowed: false, policy: 'no ALLOW policy matched: foo/ft' },

  // when
  { name: 'when source.namespace', yaml: ap('w', 'foo', '{ rules: [{ when: [{ key: source.namespace, values: [bar] }] }] }'), from: SLEEP, allowed: true, policy: 'foo/w' },
  { name: 'when destination.port notValues', yaml: ap('w', 'foo', '{ rules: [{ when: [{ key: destination.port, notValues: ["8080"] }] }] }'), port: 8080, allowed: false, policy: 'no ALLOW policy matched: foo/w' },
  { name: 'when conditions are AND-ed', yaml: ap('w', 'foo', '{ rules: [{ when: [{ key: source.ip, values: [10.0.2.0/24] }, { key: destination.ip, values: [10.0.9.9] }] }] }'), allowed: false, policy: 'no ALLOW policy matched: foo/w' },
  { name: 'when source.principal', yaml: ap('w', 'foo', '{ action: DENY, rules: [{ when: [{ key: source.principal, values: ["cluster.local/ns/bar/*"] }] }] }'), from: SLEEP, allowed: false, policy: 'foo/w' },

  // L7 fields without a waypoint
  { name: 'L7 in ALLOW: rule dropped, nothing allowed', yaml: ap('get', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar] } }], to: [{ operation: { methods: [GET] } }] }] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/get' },
  { name: 'L7 in ALLOW: other L4 rules still allow', yaml: ap('get', 'foo', '{ rules: [{ to: [{ operation: { methods: [GET] } }] }, { from: [{ source: { namespaces: [bar] } }] }] }'), from: SLEEP, allowed: true, policy: 'foo/get' },
  { name: 'L7 when in ALLOW: rule dropped', yaml: ap('hdr', 'foo', '{ rules: [{ when: [{ key: "request.headers[x-user]", values: [admin] }] }] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/hdr' },
  { name: 'L7 in DENY: L4 part denies every method', yaml: ap('no-post', 'foo', '{ action: DENY, rules: [{ from: [{ source: { namespaces: [bar] } }], to: [{ operation: { methods: [POST], ports: ["8080"] } }] }] }'), from: SLEEP, allowed: false, policy: 'foo/no-post' },
  { name: 'L7 in DENY: L4 part still scopes it', yaml: ap('no-post', 'foo', '{ action: DENY, rules: [{ from: [{ source: { namespaces: [bar] } }], to: [{ operation: { methods: [POST] } }] }] }'), from: id('foo', 'x'), allowed: true },
  { name: 'L7-only DENY denies all', yaml: ap('no-admin', 'foo', '{ action: DENY, rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }] }'), from: id('foo', 'x'), allowed: false, policy: 'foo/no-admin' },
  { name: 'targetRefs ALLOW: the waypoint\'s, not given to the agent', yaml: ap('wp', 'foo', '{ targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }], rules: [{ to: [{ operation: { paths: ["/x"] } }] }] }'), from: SLEEP, allowed: true },
  { name: 'CUSTOM: fails closed as DENY over its rules', yaml: ap('ext', 'foo', '{ action: CUSTOM, provider: { name: ext }, rules: [{ to: [{ operation: { ports: ["9090"], paths: ["/admin*"] } }] }] }'), port: 9090, allowed: false, policy: 'foo/ext' },
  { name: 'CUSTOM: other ports unaffected', yaml: ap('ext', 'foo', '{ action: CUSTOM, provider: { name: ext }, rules: [{ to: [{ operation: { ports: ["9090"], paths: ["/admin*"] } }] }] }'), port: 8080, allowed: true },

  // unknown fields
  { name: 'unknown source field in ALLOW: rule dropped', yaml: ap('typo', 'foo', '{ rules: [{ from: [{ source: { namespace: [bar] } }] }] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/typo' },
  { name: 'unknown spec field in ALLOW: denies the scope', yaml: ap('typo', 'foo', '{ rule: [{}], rules: [{}] }'), from: SLEEP, allowed: false, policy: 'no ALLOW policy matched: foo/typo' },
  { name: 'unknown action: deny all', yaml: ap('typo', 'foo', '{ action: ALOW, rules: [{ from: [{ source: { namespaces: [bar] } }] }] }'), from: id('baz', 'x'), allowed: false, policy: 'foo/typo' },

  // scopes
  { name: 'root namespace policy is global', yaml: ap('global-deny', 'istio-system', '{ action: DENY, rules: [{ from: [{ source: { namespaces: [bar] } }] }] }'), from: SLEEP, allowed: false, policy: 'istio-system/global-deny' },
  { name: 'other namespace policy does not apply', yaml: ap('deny-all', 'bar', '{ action: DENY, rules: [{}] }'), from: SLEEP, allowed: true },
  { name: 'selector: selected', yaml: ap('sel', 'foo', '{ selector: { matchLabels: { app: httpbin } }, action: DENY, rules: [{}] }'), from: SLEEP, allowed: false, policy: 'foo/sel' },
  { name: 'selector: not selected', yaml: ap('sel', 'foo', '{ selector: { matchLabels: { app: other } }, action: DENY, rules: [{}] }'), from: SLEEP, allowed: true },
  { name: 'ALLOW policies from several scopes: any match allows', yaml: ap('g', 'istio-system', '{ rules: [{ from: [{ source: { namespaces: [ops] } }] }] }') + ap('n', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar] } }] }] }'), from: SLEEP, allowed: true, policy: 'foo/n' },
  { name: 'ALLOW policies from several scopes: none matches', yaml: ap('g', 'istio-system', '{ rules: [{ from: [{ source: { namespaces: [ops] } }] }] }') + ap('n', 'foo', '{ rules: [{ from: [{ source: { namespaces: [bar] } }] }] }'), from: id('x', 'y'), allowed: false, policy: 'no ALLOW policy matched: istio-system/g, foo/n' },

  // AUDIT
  { name: 'AUDIT reported, not deciding', yaml: ap('watch', 'foo', '{ action: AUDIT, rules: [{ from: [{ source: { namespaces: [bar] } }] }] }'), from: SLEEP, allowed: true, audit: ['foo/watch'] },
  { name: 'AUDIT reported on a denial too', yaml: ap('watch', 'foo', '{ action: AUDIT, rules: [{}] }') + ap('deny-all', 'foo', '{ action: DENY, rules: [{}] }'), from: SLEEP, allowed: false, policy: 'foo/deny-all', audit: ['foo/watch'] },
  { name: 'AUDIT alone does not make ALLOW semantics apply', yaml: ap('watch', 'foo', '{ action: AUDIT, rules: [{ from: [{ source: { namespaces: [nope] } }] }] }'), from: SLEEP, allowed: true, audit: [] },
  { name: 'dry-run DENY is reported as AUDIT', yaml: ap('dry', 'foo', '{ action: DENY, rules: [{}] }').replace('metadata: { name: dry, namespace: foo }', 'metadata: { name: dry, namespace: foo, annotations: { istio.io/dry-run: "true" } }'), from: SLEEP, allowed: true, audit: ['foo/dry'] },

  // PeerAuthentication
  ...((): Case[] => {
    const y = pa('default', 'foo', '{ mtls: { mode: STRICT } }');
    return [
      { name: 'namespace STRICT: plaintext denied', yaml: y, from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
      { name: 'namespace STRICT: mTLS allowed', yaml: y, from: SLEEP, allowed: true },
    ];
  })(),
  { name: 'mesh STRICT: plaintext denied', yaml: pa('default', 'istio-system', '{ mtls: { mode: STRICT } }'), from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
  { name: 'PERMISSIVE: plaintext allowed', yaml: pa('default', 'foo', '{ mtls: { mode: PERMISSIVE } }'), from: PLAIN, allowed: true },
  { name: 'PERMISSIVE: mTLS allowed', yaml: pa('default', 'foo', '{ mtls: { mode: PERMISSIVE } }'), from: SLEEP, allowed: true },
  { name: 'namespace PERMISSIVE overrides mesh STRICT', yaml: pa('default', 'istio-system', '{ mtls: { mode: STRICT } }') + pa('default', 'foo', '{ mtls: { mode: PERMISSIVE } }'), from: PLAIN, allowed: true },
  { name: 'namespace UNSET inherits mesh STRICT', yaml: pa('default', 'istio-system', '{ mtls: { mode: STRICT } }') + pa('default', 'foo', '{}'), from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
  { name: 'workload PERMISSIVE overrides namespace STRICT', yaml: pa('default', 'foo', '{ mtls: { mode: STRICT } }') + pa('httpbin', 'foo', '{ selector: { matchLabels: { app: httpbin } }, mtls: { mode: PERMISSIVE } }'), from: PLAIN, allowed: true },
  { name: 'workload PERMISSIVE does not cover other workloads', yaml: pa('default', 'foo', '{ mtls: { mode: STRICT } }') + pa('httpbin', 'foo', '{ selector: { matchLabels: { app: httpbin } }, mtls: { mode: PERMISSIVE } }'), labels: { app: 'other' }, from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
  { name: 'workload STRICT overrides namespace PERMISSIVE', yaml: pa('default', 'foo', '{ mtls: { mode: PERMISSIVE } }') + pa('httpbin', 'foo', '{ selector: { matchLabels: { app: httpbin } }, mtls: { mode: STRICT } }'), from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
  ...((): Case[] => {
    const y = pa('default', 'foo', '{ mtls: { mode: STRICT } }') + pa('httpbin', 'foo', '{ selector: { matchLabels: { app: httpbin } }, portLevelMtls: { "8080": { mode: PERMISSIVE } } }');
    return [
      { name: 'port-level PERMISSIVE exception: that port accepts plaintext', yaml: y, from: PLAIN, port: 8080, allowed: true },
      { name: 'port-level PERMISSIVE exception: other ports stay STRICT', yaml: y, from: PLAIN, port: 9090, allowed: false, policy: 'foo/istio_converted_peer_authn_httpbin' },
      { name: 'port-level PERMISSIVE exception: mTLS anywhere', yaml: y, from: SLEEP, port: 9090, allowed: true },
    ];
  })(),
  ...((): Case[] => {
    const y = pa('httpbin', 'foo', '{ selector: { matchLabels: { app: httpbin } }, mtls: { mode: PERMISSIVE }, portLevelMtls: { "9090": { mode: STRICT } } }');
    return [
      { name: 'port-level STRICT in PERMISSIVE: that port needs mTLS', yaml: y, from: PLAIN, port: 9090, allowed: false, policy: 'foo/istio_converted_peer_authn_httpbin' },
      { name: 'port-level STRICT in PERMISSIVE: other ports accept plaintext', yaml: y, from: PLAIN, port: 8080, allowed: true },
    ];
  })(),
  { name: 'STRICT plus an ALLOW for plaintext sources: DENY wins', yaml: pa('default', 'foo', '{ mtls: { mode: STRICT } }') + ap('ips', 'foo', '{ rules: [{ from: [{ source: { ipBlocks: [10.0.0.0/8] } }] }] }'), from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
  { name: 'invalid PeerAuthentication fails closed to STRICT', yaml: pa('default', 'foo', '{ mtls: { mode: PERMISIVE } }'), from: PLAIN, allowed: false, policy: 'istio-system/istio_converted_static_strict' },
];

describe('Istio L4 authorization semantics (translate + evaluate)', () => {
  it.each(cases)('$name', (c) => {
    const w = world(c.yaml, c.labels);
    const d = w.evaluate({ from: c.from, srcIp: c.srcIp, dstIp: c.dstIp, dstPort: c.port });
    expect({ allowed: d.allowed, policy: d.policy }).toEqual({ allowed: c.allowed, policy: c.policy });
    expect(d.audit).toEqual(c.audit ?? []);
  });
});
