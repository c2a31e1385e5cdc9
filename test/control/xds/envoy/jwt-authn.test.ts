// RequestAuthentication -> the waypoint's jwt_authn filter: the Listener decoded back, its filter
// first, shaped as istiod shapes it (origins-<i> providers, payload in metadata under the issuer,
// requires_any of the providers or allow_missing), remote JWKS through the jwksUri host's cluster,
// and bad rules reported by object and field while failing closed.
import { describe, expect, it } from 'vitest';
import type { KObject } from '../../../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources, EnvoyBuilder } from '../../../../src/control/xds/envoy/build.ts';
import { LastGoodStore } from '../../../../src/control/config/config-store.ts';
import { decode, HCM, TYPE_LISTENER } from '../../../../src/control/xds/envoy/messages.ts';
import { NS } from './harness.ts';

const HOST = `web.${NS}.svc.cluster.local`;
const JWKS_HOST = `jwks.${NS}.svc.cluster.local`;
const JWT = 'envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication';
const JWKS = '{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}';

const svc = (name: string, port: number): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: name === 'web' ? '10.96.0.10' : '10.96.0.11', ports: [{ name: 'http', port, targetPort: port }] } });
const ra = (name: string, spec: Record<string, unknown>, apiVersion = 'security.istio.io/v1'): KObject =>
  ({ apiVersion, kind: 'RequestAuthentication', metadata: { name, namespace: NS }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], ...spec } });

type Any = { typeUrl?: string; type_url?: string; value: Uint8Array };
function build(objects: KObject[]) {
  const built = buildEnvoyResources([svc('web', 80), svc('jwks', 443), ...objects], DEFAULT_MESH);
  const l = decode(TYPE_LISTENER, built.resources.get(TYPE_LISTENER)!.get(`${HOST}:80`)!) as { apiListener: { apiListener: Any } };
  const hcm = decode(HCM, l.apiListener.apiListener.value) as { httpFilters: { name: string; typedConfig: Any }[] };
  const f = hcm.httpFilters[0]!;
  const config = f.name === 'envoy.filters.http.jwt_authn' ? (decode(JWT, f.typedConfig.value) as Record<string, any>) : undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  return { names: hcm.httpFilters.map((x) => x.name), config, problems: built.problems.filter((p) => p.kind === 'RequestAuthentication') };
}

describe('RequestAuthentication -> jwt_authn', () => {
  it('writes one provider per rule, first in the chain, with istiod\'s requirement', () => {
    const { names, config, problems } = build([ra('jwt', {
      jwtRules: [{
        issuer: 'https://issuer.example', audiences: ['web'], jwks: JWKS, forwardOriginalToken: true,
        fromHeaders: [{ name: 'x-jwt', prefix: 'Token ' }], fromParams: ['token'], outputPayloadToHeader: 'x-payload', outputClaimToHeaders: [{ header: 'x-sub', claim: 'sub' }],
      }],
    })]);
    expect(problems).toEqual([]);
    expect(names[0]).toBe('envoy.filters.http.jwt_authn');
    expect(config).toEqual({
      providers: {
        'origins-0': {
          issuer: 'https://issuer.example', audiences: ['web'], localJwks: { inlineString: JWKS, specifier: 'inlineString' }, jwksSourceSpecifier: 'localJwks', forward: true,
          fromHeaders: [{ name: 'x-jwt', valuePrefix: 'Token ' }], fromParams: ['token'], forwardPayloadHeader: 'x-payload', payloadInMetadata: 'https://issuer.example',
          claimToHeaders: [{ headerName: 'x-sub', claimName: 'sub' }],
        },
      },
      rules: [{ match: { prefix: '/', pathSpecifier: 'prefix' }, requires: { requiresAny: { requirements: [{ providerName: 'origins-0', requiresType: 'providerName' }, { allowMissing: {}, requiresType: 'allowMissing' }] }, requiresType: 'requiresAny' }, requirementType: 'requires' }],
      bypassCorsPreflight: true,
    });
  });

  it('fetches a jwksUri through the cluster of the service its host names (short names completed)', () => {
    const { config, problems } = build([ra('jwt', { jwtRules: [{ issuer: 'a', jwksUri: `https://jwks.${NS}/keys.json` }] }, 'security.istio.io/v1beta1')]);
    expect(problems).toEqual([]);
    expect(config!.providers['origins-0'].remoteJwks).toEqual({
      httpUri: { uri: `https://jwks.${NS}/keys.json`, cluster: `outbound|443||${JWKS_HOST}`, timeout: { seconds: 5 }, httpUpstreamType: 'cluster' },
      cacheDuration: { seconds: 300 },
    });
  });

  it('combines the rules of every policy: any provider, or each token valid or missing', () => {
    const { config } = build([ra('one', { jwtRules: [{ issuer: 'a', jwks: JWKS }] }), ra('two', { jwtRules: [{ issuer: 'b', jwks: JWKS }] })]);
    expect(Object.keys(config!.providers)).toEqual(['origins-0', 'origins-1']);
    const any = config!.rules[0].requires.requiresAny.requirements;
    expect(any.map((r: { requiresType: string }) => r.requiresType)).toEqual(['providerName', 'providerName', 'requiresAll']);
    expect(any[2].requiresAll.requirements).toHaveLength(2);
  });

  it('reports what it cannot translate and fails closed', () => {
    const { config, problems } = build([ra('bad', {
      jwtRules: [
        { issuer: 'plain', jwksUri: `http://${JWKS_HOST}/keys` },
        { issuer: 'nowhere', jwksUri: 'https://unknown.example/keys' },
        { issuer: 'wrong-port', jwksUri: `https://${JWKS_HOST}:8443/keys` },
        { issuer: 'garbage', jwks: 'not json' },
        { issuer: 'plain', jwks: JWKS },
        { jwks: JWKS },
        { issuer: 'header', jwks: JWKS, outputClaimToHeaders: [{ header: 'bad header', claim: 'sub' }] },
        { issuer: 'extra', jwks: JWKS, bogus: 1 },
      ],
    })]);
    const fields = problems.map((p) => `${p.name} ${p.field}`);
    expect(fields).toEqual([
      'bad spec.jwtRules[0].jwksUri', 'bad spec.jwtRules[1].jwksUri', 'bad spec.jwtRules[2].jwksUri', 'bad spec.jwtRules[3].jwks', 'bad spec.jwtRules[4].issuer',
      'bad spec.jwtRules[5].issuer', 'bad spec.jwtRules[6].outputClaimToHeaders[0].header', 'bad spec.jwtRules[7].bogus',
    ]);
    const p = config!.providers;
    // Unusable keys: the issuer stays known with a key set that verifies nothing.
    for (const [name, issuer] of [['origins-0', 'plain'], ['origins-1', 'nowhere'], ['origins-2', 'wrong-port'], ['origins-3', 'garbage'], ['origins-5', 'header']] as const)
      expect(p[name]).toMatchObject({ issuer, localJwks: { inlineString: '{"keys":[]}' } });
    // The rule without an issuer: a provider of any issuer with no keys.
    expect(p['origins-4'].issuer).toBeUndefined();
    expect(p['origins-4'].localJwks).toMatchObject({ inlineString: '{"keys":[]}' });
    // An unknown field is reported but the rest of the rule holds.
    expect(p['origins-6']).toMatchObject({ issuer: 'extra', localJwks: { inlineString: JWKS } });
    expect(Object.keys(p)).toHaveLength(7);
  });

  it('leaves selector policies to the agents and adds nothing without rules', () => {
    const selector: KObject = { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 's', namespace: NS }, spec: { selector: { matchLabels: { app: 'web' } }, jwtRules: [{ issuer: 'a', jwks: JWKS }] } };
    expect(build([selector]).config).toBeUndefined();
    expect(build([selector]).problems).toEqual([]);
    expect(build([ra('empty', {})]).config).toBeUndefined();
  });

  it('translates again when the jwksUri service appears, in another namespace too', () => {
    // The incremental path: the policy's namespace is unchanged, only the other one's Service is new.
    const builder = new EnvoyBuilder(DEFAULT_MESH);
    const store = new LastGoodStore();
    store.put(svc('web', 80));
    store.put(ra('jwt', { jwtRules: [{ issuer: 'a', jwksUri: 'https://jwks.other.svc.cluster.local/keys' }] }));
    const raProblems = (b: ReturnType<EnvoyBuilder['build']>) => b.problems.filter((p) => p.kind === 'RequestAuthentication').map((p) => p.field);
    expect(raProblems(builder.build(store.snapshot([])))).toEqual(['spec.jwtRules[0].jwksUri']);
    store.put({ ...svc('jwks', 443), metadata: { name: 'jwks', namespace: 'other' } });
    const after = builder.build(store.snapshot([]));
    expect(raProblems(after)).toEqual([]);
    const l = decode(TYPE_LISTENER, after.resources.get(TYPE_LISTENER)!.get(`${HOST}:80`)!) as { apiListener: { apiListener: Any } };
    const hcm = decode(HCM, l.apiListener.apiListener.value) as { httpFilters: { name: string; typedConfig: Any }[] };
    const config = decode(JWT, hcm.httpFilters[0]!.typedConfig.value) as { providers: Record<string, { remoteJwks?: { httpUri: { cluster: string } } }> };
    expect(config.providers['origins-0']!.remoteJwks!.httpUri.cluster).toBe('outbound|443||jwks.other.svc.cluster.local');
  });

  it('puts a Gateway-targeted policy on the waypoint\'s own listener', () => {
    const gw: KObject = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'wp', namespace: NS }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } };
    const policy = { ...ra('gw', { jwtRules: [{ issuer: 'a', jwks: JWKS }] }), spec: { targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }], jwtRules: [{ issuer: 'a', jwks: JWKS }] } };
    const built = buildEnvoyResources([svc('web', 80), gw, policy], DEFAULT_MESH);
    const l = decode(TYPE_LISTENER, built.resources.get(TYPE_LISTENER)!.get(`waypoint/${NS}/wp`)!) as { apiListener: { apiListener: Any } };
    const hcm = decode(HCM, l.apiListener.apiListener.value) as { httpFilters: { name: string; typedConfig: Any }[] };
    expect(hcm.httpFilters.map((f) => f.name)).toEqual(['envoy.filters.http.jwt_authn']);
    expect(build([]).config).toBeUndefined(); // the service port gets nothing
  });
});
