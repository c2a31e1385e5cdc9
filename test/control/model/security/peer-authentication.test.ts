// PeerAuthentication -> levels and modes, and the per-workload effective DENY policy.
import { describe, expect, it } from 'vitest';
import { effectivePeerAuthn, staticStrictPolicy, translatePeerAuthentication, type PeerAuthn } from '../../../../src/control/model/security/peer-authentication.ts';

const obj = (name: string, ns: string, spec: unknown, creationTimestamp = '2024-01-01T00:00:00Z') => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'PeerAuthentication',
  metadata: { name, namespace: ns, creationTimestamp },
  spec,
});
const pa = (name: string, ns: string, spec: unknown, created?: string): PeerAuthn => {
  const r = translatePeerAuthentication(obj(name, ns, spec, created));
  if (!r.peerAuthn) throw new Error(JSON.stringify(r.problems));
  return r.peerAuthn;
};
const WL = { namespace: 'foo', labels: { app: 'httpbin' } };
const SEL = { matchLabels: { app: 'httpbin' } };
const STRICT_KEY = 'istio-system/istio_converted_static_strict';
const key = (p?: { namespace: string; name: string }) => (p ? `${p.namespace}/${p.name}` : undefined);

describe('translatePeerAuthentication', () => {
  it.each([
    ['mesh', 'istio-system', { mtls: { mode: 'STRICT' } }, 'MESH', 'STRICT'],
    ['namespace', 'foo', { mtls: { mode: 'PERMISSIVE' } }, 'NAMESPACE', 'PERMISSIVE'],
    ['workload', 'foo', { selector: SEL, mtls: { mode: 'DISABLE' } }, 'WORKLOAD', 'DISABLE'],
    ['no mtls is UNSET', 'foo', {}, 'NAMESPACE', 'UNSET'],
    ['empty selector is namespace level', 'foo', { selector: { matchLabels: {} }, mtls: { mode: 'STRICT' } }, 'NAMESPACE', 'STRICT'],
  ])('%s', (_n, ns, spec, level, mode) => {
    const r = translatePeerAuthentication(obj('x', ns, spec));
    expect(r.problems).toEqual([]);
    expect(r.peerAuthn).toMatchObject({ level, mode, portLevel: [] });
  });

  it('port-level modes', () => {
    const r = translatePeerAuthentication(obj('x', 'foo', { selector: SEL, mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' }, 9090: { mode: 'UNSET' } } }));
    expect(r.problems).toEqual([]);
    expect(r.peerAuthn?.portLevel).toEqual([{ port: 8080, mode: 'PERMISSIVE' }, { port: 9090, mode: 'UNSET' }]);
  });

  it.each([
    ['unknown mode', { mtls: { mode: 'PERMISIVE' } }, 'spec.mtls.mode'],
    ['unknown spec field', { mtls: { mode: 'PERMISSIVE' }, mTLS: {} }, 'spec.mTLS'],
    ['unknown mtls field', { mtls: { mode: 'PERMISSIVE', strict: false } }, 'spec.mtls.strict'],
    ['port-level without selector', { mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { '80': { mode: 'PERMISSIVE' } } }, 'spec.portLevelMtls'],
    ['bad port', { selector: SEL, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { http: { mode: 'PERMISSIVE' } } }, 'spec.portLevelMtls.http'],
    ['bad port mode', { selector: SEL, mtls: { mode: 'PERMISSIVE' }, portLevelMtls: { '80': { mode: 'OFF' } } }, 'spec.portLevelMtls.80.mode'],
  ])('%s: problem at the field, enforced as STRICT on all ports', (_n, spec, field) => {
    const r = translatePeerAuthentication(obj('x', 'foo', spec));
    expect(r.problems.map((p) => p.field)).toEqual([field]);
    expect(r.problems[0]?.reason).toMatch(/STRICT on all ports/);
    expect(r.peerAuthn).toMatchObject({ mode: 'STRICT', portLevel: [] });
  });
});

describe('effectivePeerAuthn', () => {
  it('static strict policy denies connections without a principal', () => {
    expect(staticStrictPolicy('istio-system')).toEqual({
      name: 'istio_converted_static_strict', namespace: 'istio-system', scope: 'WORKLOAD_SELECTOR', action: 'DENY',
      rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }],
    });
  });

  const mesh = (mode: string) => pa('default', 'istio-system', { mtls: { mode } });
  const ns = (mode: string, n = 'foo') => pa('default', n, { mtls: { mode } });
  const wl = (spec: Record<string, unknown>, name = 'httpbin', created?: string) => pa(name, 'foo', { selector: SEL, ...spec }, created);

  it.each<[string, PeerAuthn[], string, string | undefined]>([
    ['nothing: PERMISSIVE', [], 'PERMISSIVE', undefined],
    ['mesh STRICT', [mesh('STRICT')], 'STRICT', STRICT_KEY],
    ['mesh UNSET is PERMISSIVE', [mesh('UNSET')], 'PERMISSIVE', undefined],
    ['namespace STRICT', [ns('STRICT')], 'STRICT', STRICT_KEY],
    ['other namespace STRICT ignored', [ns('STRICT', 'bar')], 'PERMISSIVE', undefined],
    ['namespace PERMISSIVE over mesh STRICT', [mesh('STRICT'), ns('PERMISSIVE')], 'PERMISSIVE', undefined],
    ['namespace DISABLE over mesh STRICT', [mesh('STRICT'), ns('DISABLE')], 'PERMISSIVE', undefined],
    ['namespace UNSET inherits mesh', [mesh('STRICT'), ns('UNSET')], 'STRICT', STRICT_KEY],
    ['workload PERMISSIVE over namespace STRICT', [ns('STRICT'), wl({ mtls: { mode: 'PERMISSIVE' } })], 'PERMISSIVE', undefined],
    ['workload UNSET inherits namespace', [ns('STRICT'), wl({})], 'STRICT', STRICT_KEY],
    ['workload STRICT over mesh PERMISSIVE', [mesh('PERMISSIVE'), wl({ mtls: { mode: 'STRICT' } })], 'STRICT', STRICT_KEY],
    ['port-level equal to the workload mode changes nothing', [wl({ mtls: { mode: 'STRICT' }, portLevelMtls: { '80': { mode: 'STRICT' }, '81': { mode: 'UNSET' } } })], 'STRICT', STRICT_KEY],
    ['port-level exception: converted policy', [ns('STRICT'), wl({ portLevelMtls: { '80': { mode: 'PERMISSIVE' } } })], 'STRICT', 'foo/istio_converted_peer_authn_httpbin'],
    ['oldest workload policy wins', [wl({ mtls: { mode: 'STRICT' } }, 'newer', '2024-02-01T00:00:00Z'), wl({ mtls: { mode: 'PERMISSIVE' } }, 'older', '2023-01-01T00:00:00Z')], 'PERMISSIVE', undefined],
  ])('%s', (_n, all, mode, policy) => {
    const e = effectivePeerAuthn(WL, all, 'istio-system');
    expect(e.mode).toBe(mode);
    expect(key(e.policy)).toBe(policy);
  });

  it('workload policy for other labels does not apply', () => {
    const e = effectivePeerAuthn({ namespace: 'foo', labels: { app: 'other' } }, [ns('STRICT'), wl({ mtls: { mode: 'PERMISSIVE' } })]);
    expect(key(e.policy)).toBe(STRICT_KEY);
  });

  it('STRICT with PERMISSIVE ports: notDestinationPorts', () => {
    const e = effectivePeerAuthn(WL, [wl({ mtls: { mode: 'STRICT' }, portLevelMtls: { '9090': { mode: 'DISABLE' }, '8080': { mode: 'PERMISSIVE' } } })]);
    expect(e.portExceptions).toEqual([8080, 9090]);
    expect(e.policy).toEqual({
      name: 'istio_converted_peer_authn_httpbin', namespace: 'foo', scope: 'WORKLOAD_SELECTOR', action: 'DENY',
      rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }], notDestinationPorts: [8080, 9090] }] }] }],
    });
  });

  it('PERMISSIVE (inherited from mesh) with a STRICT port: destinationPorts', () => {
    const e = effectivePeerAuthn(WL, [mesh('PERMISSIVE'), wl({ portLevelMtls: { '9090': { mode: 'STRICT' } } })]);
    expect(e.mode).toBe('PERMISSIVE');
    expect(e.policy?.rules).toEqual([{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }], destinationPorts: [9090] }] }] }]);
  });

  it('uses the given root namespace', () => {
    const m = translatePeerAuthentication(obj('default', 'mesh-root', { mtls: { mode: 'STRICT' } }), { rootNamespace: 'mesh-root' }).peerAuthn!;
    expect(m.level).toBe('MESH');
    const e = effectivePeerAuthn(WL, [m], 'mesh-root');
    expect(key(e.policy)).toBe('mesh-root/istio_converted_static_strict');
  });
});
