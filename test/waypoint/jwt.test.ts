// RequestAuthentication end to end: the control plane translates it, the waypoint verifies tokens
// with keys it fetches over real HTTPS from a JWKS server (a pod of the Service "jwks", its
// certificate for the service's name from a CA the waypoint is given), and answers as Envoy
// does. Valid tokens pass with the claim and payload headers and the token removed (or kept with
// forwardOriginalToken); forged, expired, foreign and unknown-issuer tokens are refused with
// Envoy's status, body, challenge and details; a missing token passes; a new signing key is
// picked up without a restart; a JWKS server that hangs, floods or fails is bounded.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import type { KObject } from '../../src/kube/objects.ts';
import { P256 as EC, generateP256, privateKeyPem, x509 } from '../../src/control/ca/x509.ts';
import { MAX_JWKS_BYTES } from '../../src/waypoint/filters/jwt-jwks.ts';
import { Cleanup, client, NS, stand, until, webPod, webService, type Stand } from './harness.ts';

const DAY = 86_400_000;
const JWKS_HOST = `jwks.${NS}.svc.cluster.local`;
const ISSUER = 'https://issuer.test';
const INLINE_ISSUER = 'https://inline.test';

/** A CA and a server certificate for the JWKS service's name. */
async function serverCert(): Promise<{ ca: string; cert: string; key: string }> {
  const caKeys = await generateP256();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=jwks test ca', keys: caKeys, notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + DAY), signingAlgorithm: EC,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keys = await generateP256();
  const leaf = await x509.X509CertificateGenerator.create({
    subject: `CN=${JWKS_HOST}`, issuer: ca.subject, notBefore: new Date(Date.now() - DAY), notAfter: new Date(Date.now() + DAY),
    publicKey: keys.publicKey, signingKey: caKeys.privateKey, signingAlgorithm: EC,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: JWKS_HOST }]), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])],
  });
  return { ca: ca.toString('pem'), cert: leaf.toString('pem'), key: await privateKeyPem(keys.privateKey) };
}

interface Signer {
  kid: string;
  jwk: JWK;
  sign(claims: Record<string, unknown>, o?: { exp?: number; kid?: string; iss?: string }): Promise<string>;
}

async function signer(kid: string): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  return {
    kid, jwk,
    sign: (claims, o = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: o.kid ?? kid }).setIssuer(o.iss ?? ISSUER).setIssuedAt()
        .setExpirationTime(o.exp ?? Math.floor(Date.now() / 1000) + 600).sign(privateKey),
  };
}

/** The JWKS pod: `/keys` serves the current set, `/hang` never answers, `/huge` streams 50 MB, `/fail` answers 500. */
async function jwksServer(cleanup: Cleanup, tls: { cert: string; key: string }) {
  const state = { keys: [] as JWK[], fetches: 0, hugeSent: 0, failFetches: 0 };
  const server = https.createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
    res.on('error', () => {});
    if (req.url === '/keys') {
      state.fetches++;
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
    }
    if (req.url === '/hang') return; // never answers
    if (req.url === '/fail') {
      state.failFetches++;
      return void res.writeHead(500).end('no');
    }
    if (req.url === '/huge') {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => {
        while (state.hugeSent < 50 * 1024 * 1024 && !res.destroyed) {
          state.hugeSent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => {
    server.closeAllConnections();
    server.close();
  });
  return { state, port: (server.address() as AddressInfo).port };
}

const jwksObjects = (port: number): KObject[] => [
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'jwks', namespace: NS }, spec: { selector: { app: 'jwks' }, clusterIP: '10.96.0.40', ports: [{ name: 'https', port: 443, targetPort: port }] } },
  {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'jwks-0', namespace: NS, labels: { app: 'jwks' } },
    spec: { serviceAccountName: 'jwks', containers: [{ name: 'jwks', ports: [{ containerPort: port }] }] },
    status: { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
  },
];

const requestAuthn = (rules: Record<string, unknown>[]): KObject => ({
  apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: NS },
  spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], jwtRules: rules },
});

describe('waypoint JWT authentication', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  async function setup(extraRules: Record<string, unknown>[] = [], trust?: string) {
    const tls = await serverCert();
    const jwks = await jwksServer(cleanup, tls);
    const k1 = await signer('k1');
    const inline = await signer('i1');
    jwks.state.keys = [k1.jwk];
    const rules = [
      { issuer: ISSUER, audiences: ['web'], jwksUri: `https://${JWKS_HOST}/keys`, outputClaimToHeaders: [{ header: 'x-jwt-sub', claim: 'sub' }], outputPayloadToHeader: 'x-jwt-payload' },
      { issuer: INLINE_ISSUER, jwks: JSON.stringify({ keys: [inline.jwk] }), fromHeaders: [{ name: 'x-token', prefix: 'Token ' }], fromParams: ['tok'], forwardOriginalToken: true },
      ...extraRules,
    ];
    const s = await stand(cleanup, [webService(), webPod('v1'), webPod('v2'), ...jwksObjects(jwks.port), requestAuthn(rules)], {}, { jwks: { caPem: trust ?? tls.ca, cooldownMs: 1000 } });
    await until(() => (s.config.table.filters?.size ?? 0) > 0, 10_000, 'the jwt filter');
    return { s, c: client(cleanup, s), jwks, k1, inline };
  }

  const lastSeen = (s: Stand) => [...s.v1.seen, ...s.v2.seen].sort((a, b) => Number(a.headers['x-n']) - Number(b.headers['x-n'])).at(-1)!;
  const denial = (s: Stand) => s.accessLog.at(-1)!;

  it('passes a valid token with its claim and payload forwarded and the token removed; a missing token passes unauthenticated', async () => {
    const { s, c, jwks, k1, inline } = await setup();
    const token = await k1.sign({ sub: 'alice', aud: 'web', group: 'admins' });
    const ok = await c.request('/', { headers: { authorization: `Bearer ${token}`, 'x-n': '1' } });
    expect(ok.status).toBe(200);
    const seen = lastSeen(s);
    expect(seen.headers['x-jwt-sub']).toBe('alice');
    expect(seen.headers['x-jwt-payload']).toBe(token.split('.')[1]);
    expect(JSON.parse(Buffer.from(String(seen.headers['x-jwt-payload']), 'base64url').toString())).toMatchObject({ sub: 'alice', iss: ISSUER });
    expect(seen.headers.authorization).toBeUndefined();
    expect(jwks.state.fetches).toBe(1);

    // forwardOriginalToken keeps it; fromHeaders with its prefix, fromParams.
    const it1 = await inline.sign({ sub: 'bob' }, { iss: INLINE_ISSUER });
    expect((await c.request('/', { headers: { 'x-token': `Token ${it1}`, 'x-n': '2' } })).status).toBe(200);
    expect(lastSeen(s).headers['x-token']).toBe(`Token ${it1}`);
    expect((await c.request(`/?tok=${it1}`, { headers: { 'x-n': '3' } })).status).toBe(200);
    // Not at the rule's locations: the inline issuer's token in Authorization is an issuer the default location's provider does not know.
    expect((await c.request('/', { headers: { authorization: `Bearer ${it1}` } })).status).toBe(401);

    // No token: passes, nothing added (no policy here requires a principal).
    const none = await c.request('/', { headers: { 'x-n': '4' } });
    expect(none.status).toBe(200);
    expect(lastSeen(s).headers['x-jwt-sub']).toBeUndefined();
    // The keys were fetched once for all of it (cached).
    expect(jwks.state.fetches).toBe(1);
  });

  it('refuses forged, expired, foreign-audience and unknown-issuer tokens as Envoy does', async () => {
    const { s, c, k1 } = await setup();
    const forger = await signer('k1'); // the same kid, another key
    const cases: [string, string, number, string][] = [
      ['forged', await forger.sign({ sub: 'mallory', aud: 'web' }), 401, 'Jwt verification fails'],
      ['expired', await k1.sign({ sub: 'alice', aud: 'web' }, { exp: Math.floor(Date.now() / 1000) - 120 }), 401, 'Jwt is expired'],
      ['audience', await k1.sign({ sub: 'alice', aud: 'other' }), 403, 'Audiences in Jwt are not allowed'],
      ['issuer', await k1.sign({ sub: 'alice', aud: 'web' }, { iss: 'https://elsewhere.test' }), 401, 'Jwt issuer is not configured'],
      ['garbage', 'not-a-jwt', 401, 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections'],
    ];
    const served = s.v1.seen.length + s.v2.seen.length;
    for (const [what, token, status, body] of cases) {
      const r = await c.request('/some/path?q=1', { headers: { authorization: `Bearer ${token}` } });
      expect({ what, status: r.status, body: r.body }).toEqual({ what, status, body });
      expect(r.headers['www-authenticate']).toBe('Bearer realm="http://web/some/path?q=1", error="invalid_token"');
      expect(denial(s)).toMatchObject({ response_code: status, response_flags: '-', response_code_details: `jwt_authn_access_denied{${body.replace(/ /g, '_')}}` });
    }
    // Within the clock skew (60 s) an expired token still passes.
    expect((await c.request('/', { headers: { authorization: `Bearer ${await k1.sign({ aud: 'web' }, { exp: Math.floor(Date.now() / 1000) - 30 })}` } })).status).toBe(200);
    expect(s.v1.seen.length + s.v2.seen.length).toBe(served + 1);
  });

  it('picks up a rotated signing key (a new kid) without a restart, fetching once for a burst', async () => {
    const { c, jwks, k1 } = await setup();
    const old = await k1.sign({ aud: 'web' });
    for (let i = 0; i < 3; i++) expect((await c.request('/', { headers: { authorization: `Bearer ${old}` } })).status).toBe(200); // verified once, then cached
    expect(jwks.state.fetches).toBe(1);
    const k2 = await signer('k2');
    jwks.state.keys = [k2.jwk];
    await new Promise((r) => setTimeout(r, 1100)); // past the refetch cooldown
    const token = await k2.sign({ sub: 'carol', aud: 'web' });
    const replies = await Promise.all(Array.from({ length: 20 }, () => c.request('/', { headers: { authorization: `Bearer ${token}` } })));
    expect(replies.map((r) => r.status)).toEqual(Array(20).fill(200));
    // One refetch for the unknown kid, shared by the concurrent requests.
    expect(jwks.state.fetches).toBe(2);
    // k1 left the set: its token, cached before, is refused now.
    expect((await c.request('/', { headers: { authorization: `Bearer ${old}` } })).body).toBe("Jwks doesn't have key to match kid or alg from Jwt");
    // Unknown kids fetch again at most once per cooldown: a stream of them is not a stream of fetches.
    const k3 = await signer('k3');
    const unknown = await k3.sign({ aud: 'web' });
    const before = jwks.state.fetches;
    for (let i = 0; i < 5; i++) expect((await c.request('/', { headers: { authorization: `Bearer ${unknown}` } })).body).toBe("Jwks doesn't have key to match kid or alg from Jwt");
    expect(jwks.state.fetches - before).toBeLessThanOrEqual(1);
  });

  it('fetches keys only from a server whose certificate the given CAs vouch for', async () => {
    const other = await serverCert();
    const { c, jwks, k1 } = await setup([], other.ca);
    const r = await c.request('/', { headers: { authorization: `Bearer ${await k1.sign({ aud: 'web' })}` } });
    expect({ status: r.status, body: r.body }).toEqual({ status: 401, body: 'Jwks remote fetch is failed' });
    expect(jwks.state.fetches).toBe(0); // refused at the handshake, nothing asked
  });

  it('bounds a JWKS server that hangs, floods or fails', async () => {
    const hostile = [
      { issuer: 'https://hang.test', jwksUri: `https://${JWKS_HOST}/hang`, timeout: '500ms' },
      { issuer: 'https://huge.test', jwksUri: `https://${JWKS_HOST}/huge` },
      { issuer: 'https://fail.test', jwksUri: `https://${JWKS_HOST}/fail` },
    ];
    const { s, c, jwks, k1 } = await setup(hostile);
    const t0 = Date.now();
    const hang = await c.request('/', { headers: { authorization: `Bearer ${await k1.sign({}, { iss: 'https://hang.test' })}` } });
    expect({ status: hang.status, body: hang.body }).toEqual({ status: 401, body: 'Jwks remote fetch is failed' });
    expect(Date.now() - t0).toBeLessThan(5000); // the fetch timeout, not a hung request

    const huge = await c.request('/', { headers: { authorization: `Bearer ${await k1.sign({}, { iss: 'https://huge.test' })}` } });
    expect({ status: huge.status, body: huge.body }).toEqual({ status: 401, body: 'Jwks remote fetch is failed' });
    // The waypoint stopped reading soon after the limit: far less than the 50 MB was sent.
    await until(() => jwks.state.hugeSent > MAX_JWKS_BYTES, 5000, 'the flood began');
    expect(jwks.state.hugeSent).toBeLessThan(20 * 1024 * 1024);

    // A failing server is asked at most once a second, whatever the request rate.
    const failing = await k1.sign({}, { iss: 'https://fail.test' });
    const replies = await Promise.all(Array.from({ length: 30 }, () => c.request('/', { headers: { authorization: `Bearer ${failing}` } })));
    expect(new Set(replies.map((r) => `${r.status} ${r.body}`))).toEqual(new Set(['401 Jwks remote fetch is failed']));
    expect(jwks.state.failFetches).toBeLessThanOrEqual(2);
    // Good tokens still pass meanwhile.
    expect((await c.request('/', { headers: { authorization: `Bearer ${await k1.sign({ aud: 'web' })}` } })).status).toBe(200);
    expect(s.accessLog.at(-2)).toMatchObject({ response_code: 401, response_code_details: 'jwt_authn_access_denied{Jwks_remote_fetch_is_failed}' });
  });
});
