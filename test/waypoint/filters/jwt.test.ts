// The JWT filter compiled from JwtAuthentication protos (encoded and decoded as on the wire):
// what it refuses (naming the field), the dynamic metadata contract RBAC reads, the merge of a
// waypoint's own filter with a port's, and hostile tokens.
import { describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { decodeEnvoy } from '../../../src/waypoint/xds/envoy.ts';
import { encode } from '../../../src/control/xds/envoy/messages.ts';
import { jwtAuthentication } from '../../../src/control/xds/envoy/jwt-authn.ts';
import { compileJwtAuthn, JWT_AUTHN_TYPE } from '../../../src/waypoint/filters/jwt.ts';
import { mergeFilters, runHttpFilters, type FilterRequest } from '../../../src/waypoint/filters/chain.ts';
import type { KObject } from '../../../src/kube/objects.ts';

const wire = (config: Record<string, unknown>) => decodeEnvoy(JWT_AUTHN_TYPE, encode(JWT_AUTHN_TYPE, config));

async function issuer(iss: string) {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] });
  const sign = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k' }).setIssuer(iss).setExpirationTime('10m').sign(privateKey);
  return { iss, jwks, sign };
}

const policy = (rules: Record<string, unknown>[]): KObject => ({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'p', namespace: 'ns' }, spec: { targetRefs: [{ kind: 'Service', name: 'web' }], jwtRules: rules } });
const filterOf = (rules: Record<string, unknown>[]) => compileJwtAuthn(wire(jwtAuthentication([policy(rules)], { problems: [] })!), 'f', {});

const request = (headers: Record<string, string>, url = '/'): FilterRequest => ({
  method: 'GET', url, path: url.split('?')[0]!, host: 'web', scheme: 'http', protocol: 'HTTP/1.1', headers: { ...headers }, peerPrincipal: '', peerIp: '', peerAddress: '', destination: '', grpc: false, metadata: new Map(),
});

describe('jwt_authn filter', () => {
  it('refuses what it cannot enforce, naming the field', () => {
    const jwks = '{"keys":[]}';
    const refused: [Record<string, unknown>, RegExp][] = [
      [{ providers: { a: { issuer: 'a', localJwks: { inlineString: jwks }, subjects: { exact: 'x' } } } }, /f\.providers\[a\]\.subjects: not supported/],
      [{ providers: { a: { issuer: 'a', localJwks: { inlineString: jwks }, requireExpiration: true } } }, /f\.providers\[a\]\.require_expiration: not supported/],
      [{ providers: { a: { issuer: 'a', remoteJwks: { httpUri: { uri: 'http://keys/x', cluster: 'c', timeout: { seconds: 1 } } } } } }, /remote_jwks\.http_uri\.uri: only https/],
      [{ providers: { a: { issuer: 'a', remoteJwks: { httpUri: { uri: 'https://keys/x', cluster: 'c' } } } } }, /http_uri\.timeout: required/],
      [{ providers: { a: { issuer: 'a', localJwks: { filename: '/etc/jwks' } } } }, /local_jwks\.filename: not supported/],
      [{ providers: { a: { issuer: 'a', localJwks: { inlineString: 'nope' } } } }, /local_jwks: JWKS is not JSON/],
      [{ filterStateRules: { name: 'x' } }, /f\.filter_state_rules: not supported/],
      [{ providers: { a: { issuer: 'a', localJwks: { inlineString: JSON.stringify({ keys: Array(65).fill({ kty: 'oct', k: 'AA' }) }) } } } }, /local_jwks: JWKS has more than 64 keys/],
      [{ rules: [{ match: { prefix: '/' }, requires: { providerName: 'missing' } }] }, /f\.rules\[0\]\.requires\.provider_name: no provider "missing"/],
      [{ rules: [{ match: { prefix: '/', headers: [{ name: 'x-a', presentMatch: true }] }, requires: { allowMissing: {} } }] }, /f\.rules\[0\]\.match\.headers: not supported/],
      [{ rules: [{ match: { safeRegex: { regex: '(a+)+' } }, requires: { allowMissing: {} } }] }, /f\.rules\[0\]\.match\.safe_regex: regex refused/],
    ];
    for (const [config, why] of refused) expect(() => compileJwtAuthn(wire(config), 'f', {})).toThrow(why);
  });

  it('sets the istio_authn metadata and the request principal of a verified token', async () => {
    const a = await issuer('https://a.test');
    const f = filterOf([{ issuer: a.iss, jwks: a.jwks }]);
    const r = request({ authorization: `Bearer ${await a.sign({ sub: 'alice', aud: ['web', 'api'], azp: 'cli', groups: ['g1'], nested: { role: 'x' } })}` });
    expect(await f.decode(r)).toBeUndefined();
    expect(r.auth).toMatchObject({ principal: 'https://a.test/alice', audiences: ['web', 'api'], presenter: 'cli' });
    expect(r.metadata.get('istio_authn')).toEqual({
      'request.auth.principal': 'https://a.test/alice',
      'request.auth.audiences': ['web', 'api'],
      'request.auth.presenter': 'cli',
      'request.auth.claims': expect.objectContaining({ sub: 'alice', groups: ['g1'], nested: { role: 'x' } }),
    });
    expect(r.metadata.get('envoy.filters.http.jwt_authn')).toHaveProperty([a.iss]);
    expect(r.headers.authorization).toBeUndefined();

    // A single aud becomes a list; no azp, no presenter.
    const r2 = request({ authorization: `Bearer ${await a.sign({ sub: 'bob', aud: 'web' })}` });
    await f.decode(r2);
    expect(r2.metadata.get('istio_authn')).not.toHaveProperty(['request.auth.presenter']);
    expect(r2.metadata.get('istio_authn')!['request.auth.audiences']).toEqual(['web']);
    // No token: nothing set.
    const r3 = request({});
    expect(await f.decode(r3)).toBeUndefined();
    expect(r3.auth).toBeUndefined();
    expect(r3.metadata.size).toBe(0);
  });

  it('merges the waypoint\'s own filter with a port\'s: a token of either issuer is known', async () => {
    const a = await issuer('https://a.test');
    const b = await issuer('https://b.test');
    const own = { http: [filterOf([{ issuer: a.iss, jwks: a.jwks }])], network: [] };
    const port = { http: [filterOf([{ issuer: b.iss, jwks: b.jwks }])], network: [] };
    const merged = mergeFilters(own, port).http;
    expect(merged).toHaveLength(1);
    for (const s of [a, b]) expect(await runHttpFilters(merged, request({ authorization: `Bearer ${await s.sign({ sub: 'x' })}` }))).toBeUndefined();
    const c = await issuer('https://c.test');
    expect((await runHttpFilters(merged, request({ authorization: `Bearer ${await c.sign({ sub: 'x' })}` })))?.body).toBe('Jwt issuer is not configured');
  });

  it('refuses hostile tokens without work: oversized, malformed parts, alg none', async () => {
    const a = await issuer('https://a.test');
    const f = filterOf([{ issuer: a.iss, jwks: a.jwks }]);
    const deny = async (token: string) => (await f.decode(request({ authorization: `Bearer ${token}` })))?.body;
    expect(await deny(`${'a'.repeat(70 * 1024)}.b.c`)).toBe('Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    expect(await deny('eyJ!.e30.c2ln')).toBe('Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections');
    expect(await deny(`${Buffer.from('{"alg":').toString('base64url')}.e30.c2ln`)).toBe('Jwt header is an invalid JSON');
    const none = `${Buffer.from('{"alg":"none","kid":"k"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss: a.iss, sub: 'x' })).toString('base64url')}.`;
    expect(await deny(none)).toBe('Jwt verification fails');
    // A good token next to a bad one at another location of the same provider fails.
    const good = await a.sign({ sub: 'x' });
    expect((await f.decode(request({ authorization: `Bearer ${good}` }, '/?access_token=bad.token.here')))?.status).toBe(401);
  });

  it('evaluates Envoy\'s other requirements: provider_name, provider_and_audiences, allow_missing, allow_missing_or_failed', async () => {
    const a = await issuer('https://a.test');
    const b = await issuer('https://b.test');
    const providers = {
      a: { issuer: a.iss, localJwks: { inlineString: a.jwks } },
      b: { issuer: b.iss, localJwks: { inlineString: b.jwks }, fromHeaders: [{ name: 'x-b' }] },
    };
    const build = (requires: Record<string, unknown>) => compileJwtAuthn(wire({ providers, rules: [{ match: { prefix: '/api' }, requires }] }), 'f', {});
    const ta = await a.sign({ sub: 'x', aud: 'web' });
    const tb = await b.sign({ sub: 'y' });
    const forged = `${ta.slice(0, ta.lastIndexOf('.'))}.${Buffer.alloc(64).toString('base64url')}`;
    const run = async (f: ReturnType<typeof build>, h: Record<string, string>, url = '/api') => {
      const reply = await f.decode(request(h, url));
      return reply ? `${reply.status} ${reply.body} | ${reply.headers?.['www-authenticate'] ?? ''}` : 'pass';
    };
    // A required provider: missing is refused, with the challenge that has no error.
    const required = build({ providerName: 'a' });
    expect(await run(required, {})).toBe('401 Jwt is missing | Bearer realm="http://web/api"');
    expect(await run(required, { authorization: `Bearer ${ta}` })).toBe('pass');
    expect(await run(required, {}, '/other')).toBe('pass'); // no rule for the path
    expect(await run(build({ providerAndAudiences: { providerName: 'a', audiences: ['api'] } }), { authorization: `Bearer ${ta}` })).toMatch(/^403 Audiences in Jwt are not allowed/);
    // Both tokens, each at its provider's location.
    const both = build({ requiresAll: { requirements: [{ providerName: 'a' }, { providerName: 'b' }] } });
    expect(await run(both, { authorization: `Bearer ${ta}` })).toMatch(/^401 Jwt is missing/);
    expect(await run(both, { authorization: `Bearer ${ta}`, 'x-b': tb })).toBe('pass');
    // allow_missing alone: a token is checked by the provider of its issuer; none is fine; a bad one is not.
    const missingOk = build({ allowMissing: {} });
    expect(await run(missingOk, {})).toBe('pass');
    expect(await run(missingOk, { 'x-b': tb })).toBe('pass');
    expect(await run(missingOk, { authorization: `Bearer ${tb}` })).toMatch(/^401 Jwt issuer is not configured/);
    expect(await run(missingOk, { authorization: `Bearer ${forged}` })).toMatch(/^401 Jwt verification fails/);
    // allow_missing_or_failed: everything passes, and only a good token authenticates.
    const lenient = build({ allowMissingOrFailed: {} });
    const bad = request({ authorization: `Bearer ${forged}` }, '/api');
    expect(await lenient.decode(bad)).toBeUndefined();
    expect(bad.auth).toBeUndefined();
    const good = request({ authorization: `Bearer ${ta}` }, '/api');
    expect(await lenient.decode(good)).toBeUndefined();
    expect(good.auth?.principal).toBe('https://a.test/x');
  });
});
