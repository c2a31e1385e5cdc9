// The cache of verified tokens (Envoy's JwtCache): a token verified once is not verified again,
// while its issuer, time window and audiences are checked on every request; it is tied to the keys
// that verified it (a new inline set, a remote set fetched again over real HTTPS with a key
// removed); it is per provider, bounded, and never holds a failure.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type JWTVerifyGetKey } from 'jose';
import { P256 as EC, generateP256, privateKeyPem, x509 } from '../../../src/control/ca/x509.ts';
import { JwtCache, MAX_CACHED_TOKEN } from '../../../src/waypoint/filters/jwt-cache.ts';
import { fixedKeys, localJwks, remoteJwks } from '../../../src/waypoint/filters/jwt-jwks.ts';
import { parseJwt, verifyJwt, type ParsedJwt } from '../../../src/waypoint/filters/jwt-verify.ts';
import { compileJwtAuthn } from '../../../src/waypoint/filters/jwt.ts';
import type { FilterRequest } from '../../../src/waypoint/filters/chain.ts';

const ISS = 'https://a.test';
const DAY = 86_400_000;
const SKEW = 60;
const nowS = () => Math.floor(Date.now() / 1000);

async function signer(kid: string) {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: 'ES256' };
  const sign = (claims: Record<string, unknown>, exp = nowS() + 600) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid }).setIssuer(ISS).setExpirationTime(exp).sign(privateKey);
  return { jwk, sign };
}

/** An inline key set whose calls are counted: each call is one signature verification. */
function counted(jwks: JWK[]) {
  const inner = localJwks(JSON.stringify({ keys: jwks }), 'test');
  const c = { calls: 0, keys: undefined as unknown as JWTVerifyGetKey };
  c.keys = fixedKeys((h, t) => (c.calls++, inner(h, t)));
  return c;
}

const parsed = (token: string) => parseJwt(token) as ParsedJwt;
const verify = (token: string, keys: JWTVerifyGetKey, cache: JwtCache, o: { audiences?: string[]; nowMs?: number } = {}) =>
  verifyJwt(parsed(token), { issuer: ISS, audiences: o.audiences ?? [], clockSkewS: SKEW, keys, cache }, o.nowMs);

describe('verified-token cache', () => {
  it('verifies a token once; its time window and audiences are still checked on every request', async () => {
    const k = await signer('k');
    const keys = counted([k.jwk]);
    const cache = new JwtCache();
    const exp = nowS() + 600;
    const token = await k.sign({ aud: 'web' }, exp);
    for (let i = 0; i < 5; i++) expect(await verify(token, keys.keys, cache, { audiences: ['web'] })).toBe('OK');
    expect(keys.calls).toBe(1);
    // Cached, yet refused for another audience, and once past exp and the skew.
    expect(await verify(token, keys.keys, cache, { audiences: ['api'] })).toBe('Audiences in Jwt are not allowed');
    expect(await verify(token, keys.keys, cache, { nowMs: (exp + SKEW + 1) * 1000 })).toBe('Jwt is expired');
    expect(await verify(token, keys.keys, cache, { nowMs: (exp + SKEW) * 1000 })).toBe('OK');
    expect(keys.calls).toBe(1);
    // The entry itself ends with the window: asked directly past it, it is a miss and goes.
    expect(cache.has(token, keys.keys, exp + SKEW + 1)).toBe(false);
    expect(cache.size).toBe(0);
  });

  it('never caches a failure: a forged signature is verified (and refused) every time', async () => {
    const k = await signer('k');
    const forger = await signer('k'); // the same kid, another key
    const keys = counted([k.jwk]);
    const cache = new JwtCache();
    const forged = await forger.sign({ sub: 'mallory' });
    for (let i = 0; i < 3; i++) expect(await verify(forged, keys.keys, cache)).toBe('Jwt verification fails');
    expect(keys.calls).toBe(3);
    // A good token's signature swapped for another: the cache holds the exact token only.
    const good = await k.sign({ sub: 'alice' });
    expect(await verify(good, keys.keys, cache)).toBe('OK');
    const spliced = `${good.slice(0, good.lastIndexOf('.'))}.${forged.slice(forged.lastIndexOf('.') + 1)}`;
    expect(await verify(spliced, keys.keys, cache)).toBe('Jwt verification fails');
    expect(cache.size).toBe(1);
  });

  it('ties an entry to the keys that verified it: a new inline set with the same JSON verifies again', async () => {
    const k = await signer('k');
    const cache = new JwtCache();
    const token = await k.sign({});
    const first = counted([k.jwk]);
    expect(await verify(token, first.keys, cache)).toBe('OK');
    const second = counted([k.jwk]);
    expect(await verify(token, second.keys, cache)).toBe('OK');
    expect(second.calls).toBe(1);
    // A key function not known to hold fixed keys is never trusted from the cache.
    const unknown = localJwks(JSON.stringify({ keys: [k.jwk] }), 'test');
    const wrapped: JWTVerifyGetKey = (h, t) => unknown(h, t);
    const c2 = new JwtCache();
    expect(await verify(token, wrapped, c2)).toBe('OK');
    expect(c2.size).toBe(0);
  });

  it('stays at its bound under a flood of distinct valid tokens, dropping the least recently used', async () => {
    const k = await signer('k');
    const keys = counted([k.jwk]);
    const cache = new JwtCache(); // Envoy's default, 100
    const kept = await k.sign({ n: -1 });
    expect(await verify(kept, keys.keys, cache)).toBe('OK');
    for (let i = 0; i < 300; i++) {
      expect(await verify(await k.sign({ n: i }), keys.keys, cache)).toBe('OK');
      if (i % 50 === 0) await verify(kept, keys.keys, cache); // in use: stays
    }
    expect(cache.size).toBe(100);
    const calls = keys.calls;
    expect(await verify(kept, keys.keys, cache)).toBe('OK');
    expect(keys.calls).toBe(calls);
    expect(new JwtCache(0).capacity).toBe(100); // jwt_cache_size 0 is the default
    expect(new JwtCache(1e9).capacity).toBe(10_000);
    // Tokens over Envoy's cacheable size are verified every time.
    const big = await k.sign({ pad: 'x'.repeat(MAX_CACHED_TOKEN) });
    await verify(big, keys.keys, cache);
    await verify(big, keys.keys, cache);
    expect(keys.calls).toBe(calls + 2);
  });

  it('is per provider: a token one provider verified is verified again by another, with its own audiences', async () => {
    const k = await signer('k');
    const jwks = JSON.stringify({ keys: [k.jwk] });
    const f = compileJwtAuthn({
      providers: {
        web: { issuer: ISS, audiences: ['web'], localJwks: { inlineString: jwks }, jwtCacheConfig: { jwtCacheSize: 10 } },
        api: { issuer: ISS, audiences: ['api'], localJwks: { inlineString: jwks }, fromHeaders: [{ name: 'x-api' }] },
      },
      rules: [
        { match: { prefix: '/web' }, requires: { providerName: 'web' } },
        { match: { prefix: '/api' }, requires: { providerName: 'api' } },
      ],
    }, 'f', {});
    const req = (url: string, headers: Record<string, string>): FilterRequest => ({
      method: 'GET', url, path: url, host: 'web', scheme: 'http', protocol: 'HTTP/1.1', headers, peerPrincipal: '', peerIp: '', peerAddress: '', destination: '', grpc: false, metadata: new Map(),
    });
    const token = await k.sign({ sub: 'alice', aud: 'web' });
    for (let i = 0; i < 2; i++) expect(await f.decode(req('/web', { authorization: `Bearer ${token}` }))).toBeUndefined();
    expect((await f.decode(req('/api', { 'x-api': token })))?.status).toBe(403);

    const web = new JwtCache();
    const api = new JwtCache();
    const keys = counted([k.jwk]);
    expect(await verify(token, keys.keys, web, { audiences: ['web'] })).toBe('OK');
    expect(await verify(token, keys.keys, api, { audiences: ['api'] })).toBe('Audiences in Jwt are not allowed');
    expect(await verify(token, keys.keys, api)).toBe('OK');
    expect(keys.calls).toBe(2);
  });
});

describe('verified-token cache over a remote JWKS', () => {
  const closers: (() => void)[] = [];
  afterEach(() => closers.splice(0).forEach((c) => c()));

  /** A JWKS server over real TLS for jwks.test, its certificate from a test CA. */
  async function jwksServer() {
    const caKeys = await generateP256();
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'CN=jwt cache test ca', keys: caKeys, notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + DAY), signingAlgorithm: EC,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
    });
    const keys = await generateP256();
    const leaf = await x509.X509CertificateGenerator.create({
      subject: 'CN=jwks.test', issuer: ca.subject, notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + DAY),
      publicKey: keys.publicKey, signingKey: caKeys.privateKey, signingAlgorithm: EC,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'jwks.test' }]), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])],
    });
    const state = { keys: [] as JWK[], fetches: 0 };
    const server = https.createServer({ cert: leaf.toString('pem'), key: await privateKeyPem(keys.privateKey) }, (req, res) => {
      state.fetches++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as AddressInfo).port;
    const remote = (cacheMs: number, cooldownMs: number) =>
      remoteJwks({ uri: 'https://jwks.test/keys', cluster: 'jwks', timeoutMs: 2000, cacheMs }, { clusterEndpoints: () => [{ address: '127.0.0.1', port }], caPem: ca.toString('pem'), cooldownMs });
    return { state, remote };
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('a fetch that removes a key (a new key fetched for its kid) ends the cached tokens of the removed one', async () => {
    const srv = await jwksServer();
    const k1 = await signer('k1');
    const k2 = await signer('k2');
    srv.state.keys = [k1.jwk];
    const keys = srv.remote(600_000, 200);
    const cache = new JwtCache();
    const old = await k1.sign({ sub: 'alice' });
    for (let i = 0; i < 3; i++) expect(await verify(old, keys, cache)).toBe('OK');
    expect(cache.size).toBe(1);
    expect(srv.state.fetches).toBe(1);
    srv.state.keys = [k2.jwk];
    await sleep(250); // past the unknown-kid cooldown
    expect(await verify(await k2.sign({}), keys, cache)).toBe('OK');
    expect(srv.state.fetches).toBe(2);
    expect(await verify(old, keys, cache)).toBe("Jwks doesn't have key to match kid or alg from Jwt");
  });

  it('a cached token does not keep a stale key set alive: past cache_duration it is verified against a fresh fetch', async () => {
    const srv = await jwksServer();
    const k1 = await signer('k1');
    srv.state.keys = [k1.jwk];
    const keys = srv.remote(300, 600_000);
    const cache = new JwtCache();
    const token = await k1.sign({});
    expect(await verify(token, keys, cache)).toBe('OK');
    expect(await verify(token, keys, cache)).toBe('OK');
    expect(cache.size).toBe(1);
    // The same keys fetched again: still the same epoch, still cached.
    await sleep(350);
    expect(await verify(token, keys, cache)).toBe('OK');
    expect(srv.state.fetches).toBe(2);
    // The key revoked (the set emptied): once the set is stale the token is refused, cached or not.
    srv.state.keys = [];
    await sleep(350);
    expect(await verify(token, keys, cache)).toBe("Jwks doesn't have key to match kid or alg from Jwt");
    expect(srv.state.fetches).toBe(3);
  });
});
