// A workload asking the CA for its own certificate with its own token (a waypoint, as Istio's
// istio-agent does), over real gRPC TLS: from the lab's workload token file, and on Kubernetes by
// TokenReview against the fake API server. What must hold: the token's service account is the
// only identity it gets; a node credential never stands in for a workload; everything else is
// refused with its gRPC code and counted; bad tokens cannot grow memory.
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../../src/identity/csr.ts';
import { CertificateAuthority, StaticWorkloadTokenAuthenticator, parseServiceAccountRef } from '../../../src/control/ca/index.ts';
import { TokenReviewAuthenticator } from '../../../src/control/ca/token-review.ts';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';
import { x509, generateP256, P256 } from '../../../src/control/ca/x509.ts';
import { FakeApiServer, serviceAccountTokens, type FakeServiceAccountToken } from '../config/fake-apiserver.ts';
import { sleep } from '../../../src/util/sleep.ts';
import { caServiceClient } from '../../../src/api/ca.ts';
import { SERVER_NAME, WORKLOAD_TOKENS, id, impersonate, opensslVerify, rawCall, startCA, tmpDir, type TestCA } from './helpers.ts';

const WAYPOINT = 'spiffe://cluster.local/ns/bookinfo/sa/waypoint';
const REVIEWS = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
const dirs: string[] = [];
const csrs: Record<string, string> = {};

async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('expected a refusal');
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A P-256 CSR with exactly these SANs (none: no extension at all). */
async function csrWithNames(names: x509.JsonGeneralNames): Promise<string> {
  const keys = await generateP256();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: P256,
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names, true)] : [],
  });
  return csr.toString('pem');
}

beforeAll(async () => {
  csrs.waypoint = (await createKeyAndCsr(id('bookinfo', 'waypoint'))).csrPem;
  csrs.reviews = (await createKeyAndCsr(id('bookinfo', 'reviews'))).csrPem;
  csrs.otherDomain = (await createKeyAndCsr(id('bookinfo', 'waypoint', 'evil.org'))).csrPem;
  csrs.both = await csrWithNames([{ type: 'url', value: WAYPOINT }, { type: 'url', value: REVIEWS }]);
  csrs.dns = await csrWithNames([{ type: 'url', value: WAYPOINT }, { type: 'dns', value: 'weft-control.istio-system.svc' }]);
  csrs.none = await csrWithNames([]);
  csrs.garbage = 'garbage';
});
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('workload credentials from the token file (the lab)', () => {
  let t: TestCA;
  beforeAll(async () => {
    dirs.push(tmpDir());
    t = await startCA(await CertificateAuthority.create(), dirs.at(-1)!, undefined, { workloads: 'file' });
    t.scheduled.add(`node-a|${REVIEWS}`);
  });
  afterAll(() => t?.stop());

  it('a workload token gets its own identity, without naming it in the request; openssl verifies the chain', async () => {
    const res = await rawCall(t, { csr: csrs.waypoint, validity_duration: 3600 }, bearer('wl-waypoint'));
    expect(res.cert_chain).toHaveLength(2);
    expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
    expect(await opensslVerify(res.cert_chain)).toContain('OK');
    expect(t.results.at(-1)).toEqual({ code: grpc.status.OK, caller: 'workload', identity: WAYPOINT });
    expect(t.logs.at(-1)).toMatchObject({ msg: 'certificate issued', caller: 'workload', identity: WAYPOINT });
  });

  it.each([
    ["another service account's identity in the CSR", 'wl-waypoint', 'reviews', undefined, grpc.status.PERMISSION_DENIED, /CSR asks for url:spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/reviews; .* for spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/waypoint only/],
    ['its own name under another trust domain', 'wl-waypoint', 'otherDomain', undefined, grpc.status.PERMISSION_DENIED, /evil\.org/],
    ['its own identity plus another', 'wl-waypoint', 'both', undefined, grpc.status.PERMISSION_DENIED, /CSR asks for url:.*waypoint, url:.*reviews/],
    ['its own identity plus a DNS name', 'wl-waypoint', 'dns', undefined, grpc.status.PERMISSION_DENIED, /dns:weft-control/],
    ['a CSR naming nothing', 'wl-waypoint', 'none', undefined, grpc.status.INVALID_ARGUMENT, /names no identity/],
    ['a garbage CSR', 'wl-waypoint', 'garbage', undefined, grpc.status.INVALID_ARGUMENT, /CSR/],
    ['impersonation with a workload token (even of itself)', 'wl-waypoint', 'waypoint', WAYPOINT, grpc.status.PERMISSION_DENIED, /its own identity only; ImpersonatedIdentity is for node agents/],
    ['impersonation of another with a workload token', 'wl-reviews', 'waypoint', WAYPOINT, grpc.status.PERMISSION_DENIED, /ImpersonatedIdentity is for node agents/],
    ['a node token without impersonation', 'tok-a', 'reviews', undefined, grpc.status.INVALID_ARGUMENT, /no ImpersonatedIdentity/],
    ['an unknown token', 'nope', 'waypoint', undefined, grpc.status.UNAUTHENTICATED, /unknown token/],
    ['an unknown token with impersonation', 'nope', 'reviews', REVIEWS, grpc.status.UNAUTHENTICATED, /unknown token/],
  ] as const)('refuses %s', async (_name, token, csr, uri, code, reason) => {
    const before = t.counters.refused[grpc.status[code]] ?? 0;
    const issued = t.counters.issued;
    const e = await refusal(rawCall(t, { csr: csrs[csr]!, validity_duration: 3600, ...(uri ? { metadata: impersonate(uri) } : {}) }, bearer(token)));
    expect(e.code).toBe(code);
    expect(e.details).toMatch(reason);
    expect(t.counters.refused[grpc.status[code]]).toBe(before + 1);
    expect(t.counters.issued).toBe(issued);
    expect(t.results.at(-1)?.code).toBe(code);
    expect(t.logs.at(-1)).toMatchObject({ msg: 'certificate refused', code: grpc.status[code] });
  });

  it('an empty ImpersonatedIdentity names nobody: the workload gets its own identity (as istiod reads it)', async () => {
    const res = await rawCall(t, { csr: csrs.waypoint, metadata: impersonate('') }, bearer('wl-waypoint'));
    expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
  });

  it('a node token with impersonation keeps the node path', async () => {
    const res = await rawCall(t, { csr: csrs.reviews, metadata: impersonate(REVIEWS) }, bearer('tok-a'));
    expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${REVIEWS}`);
    expect(t.results.at(-1)).toMatchObject({ code: grpc.status.OK, caller: 'node', node: 'node-a', identity: REVIEWS });
  });

  it('picks up added and revoked workload tokens; a broken file refuses everyone (UNAVAILABLE) until fixed', async () => {
    writeFileSync(t.workloadTokenFile, JSON.stringify({ 'wl-new': 'bookinfo/waypoint' }));
    const ok = await rawCall(t, { csr: csrs.waypoint }, bearer('wl-new'));
    expect(new X509Certificate(ok.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
    expect((await refusal(rawCall(t, { csr: csrs.waypoint }, bearer('wl-waypoint')))).code).toBe(grpc.status.UNAUTHENTICATED);

    writeFileSync(t.workloadTokenFile, '{"wl-new": "bookinfo/Waypoint"}');
    const broken = await refusal(rawCall(t, { csr: csrs.waypoint }, bearer('wl-new')));
    expect(broken.code).toBe(grpc.status.UNAVAILABLE);
    expect(broken.details).toMatch(/workload tokens .*workload-tokens.json: entry 1: "Waypoint" in "bookinfo\/Waypoint" is not a service account name/);
    expect(broken.details).not.toContain('wl-new'); // the token itself never appears in an error

    writeFileSync(t.workloadTokenFile, JSON.stringify(WORKLOAD_TOKENS));
    expect((await rawCall(t, { csr: csrs.waypoint }, bearer('wl-waypoint'))).cert_chain).toHaveLength(2);
  });
});

describe('the workload token file format', () => {
  it.each([
    ['bookinfo/waypoint', { namespace: 'bookinfo', serviceAccount: 'waypoint' }],
    ['a/b.c-d', { namespace: 'a', serviceAccount: 'b.c-d' }],
    ['bookinfo', /is not "<namespace>\/<service account>"/],
    ['bookinfo/waypoint/x', /is not "<namespace>\/<service account>"/],
    ['/waypoint', /is not "<namespace>\/<service account>"/],
    ['Bookinfo/waypoint', /"Bookinfo" .* not a namespace name/],
    ['book.info/waypoint', /not a namespace name/],
    [`${'a'.repeat(64)}/w`, /not a namespace name/],
    ['bookinfo/way_point', /not a service account name/],
    [42, /got number/],
    [null, /got null/],
  ] as const)('%j', (v, want) => {
    const got = parseServiceAccountRef(v);
    if (want instanceof RegExp) expect(got).toMatch(want);
    else expect(got).toEqual(want);
  });

  it('a broken file fails the start, naming the file and entry, never the token', async () => {
    const dir = tmpDir();
    dirs.push(dir);
    const file = `${dir}/w.json`;
    for (const [text, want] of [
      ['not json', /workload tokens .*w\.json: .*JSON/],
      ['[]', /expected an object of token to "<namespace>\/<service account>"/],
      ['{"secret-1": "ns/sa", "secret-2": 7}', /entry 2: want "<namespace>\/<service account>", got number/],
    ] as const) {
      writeFileSync(file, text);
      const e = await StaticWorkloadTokenAuthenticator.open(file).then(() => undefined, (err: Error) => err);
      expect(e?.message).toMatch(want);
      expect(e?.message).not.toContain('secret');
    }
    await expect(StaticWorkloadTokenAuthenticator.open(`${dir}/missing.json`)).rejects.toThrow(/ENOENT/);
  });
});

describe('workload credentials by TokenReview (Kubernetes)', () => {
  let api: FakeApiServer;
  let t: TestCA;
  const now = () => Math.floor(Date.now() / 1000);
  const tokens: Record<string, FakeServiceAccountToken> = {
    waypoint: { namespace: 'bookinfo', serviceAccount: 'waypoint', audiences: ['istio-ca'], node: 'node-a', exp: now() + 3600 },
    'default-token': { namespace: 'bookinfo', serviceAccount: 'waypoint' }, // the pod's API token: no istio-ca audience
    agent: { namespace: 'istio-system', serviceAccount: 'weft-agent', audiences: ['istio-ca'], node: 'node-a' },
    'agent-unbound': { namespace: 'istio-system', serviceAccount: 'weft-agent', audiences: ['istio-ca'] }, // no node: not a node credential either
    expired: { namespace: 'bookinfo', serviceAccount: 'waypoint', audiences: ['istio-ca'], exp: now() - 60 },
  };
  /** Tokens the fake API server was asked to review, in order. */
  const reviewed: string[] = [];
  const reviewsOf = (token: string) => reviewed.filter((x) => x === token).length;

  const make = async (o: { maxEntries?: number } = {}) => {
    const dir = tmpDir();
    dirs.push(dir);
    const r = new TokenReviewAuthenticator(loadKubeConfig({ kubeconfig: api.writeKubeconfig(dir) }), { agentServiceAccounts: ['istio-system/weft-agent'], audiences: ['istio-ca'], ...o });
    const ca = await startCA(await CertificateAuthority.create(), dir, undefined, { authenticator: r, workloads: r.workloads });
    ca.scheduled.add(`node-a|${REVIEWS}`);
    return { r, ca };
  };

  beforeAll(async () => {
    api = await FakeApiServer.start();
    const answer = serviceAccountTokens(tokens);
    api.tokenReview = (spec) => {
      reviewed.push(spec.token ?? '');
      return answer(spec);
    };
    ({ ca: t } = await make());
  });
  afterAll(async () => {
    await t?.stop();
    await api?.close();
  });

  it("a waypoint's projected token gets its service account's identity, with one review for the node and workload checks", async () => {
    const res = await rawCall(t, { csr: csrs.waypoint, validity_duration: 3600 }, bearer('waypoint'));
    expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
    expect(await opensslVerify(res.cert_chain)).toContain('OK');
    expect(t.results.at(-1)).toEqual({ code: grpc.status.OK, caller: 'workload', identity: WAYPOINT });
    expect(reviewsOf('waypoint')).toBe(1);
    // A pod-bound token names a node, but only the agents' service accounts are node credentials.
    await rawCall(t, { csr: csrs.waypoint }, bearer('waypoint'));
    expect(reviewsOf('waypoint')).toBe(1); // cached
    const e = await refusal(rawCall(t, { csr: csrs.reviews }, bearer('waypoint')));
    expect(e.code).toBe(grpc.status.PERMISSION_DENIED);
  });

  it("refuses a token without the istio-ca audience (the pod's API token), an expired token, and an agent's token as a workload", async () => {
    const aud = await refusal(rawCall(t, { csr: csrs.waypoint }, bearer('default-token')));
    expect(aud.code).toBe(grpc.status.UNAUTHENTICATED);
    const exp = await refusal(rawCall(t, { csr: csrs.waypoint }, bearer('expired')));
    expect(exp.code).toBe(grpc.status.UNAUTHENTICATED);
    const agent = await refusal(rawCall(t, { csr: csrs.reviews }, bearer('agent')));
    expect(agent.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(agent.details).toMatch(/ImpersonatedIdentity/);
    // An agent's token is never a workload credential, even one the node path cannot use.
    const csrAgent = (await createKeyAndCsr(id('istio-system', 'weft-agent'))).csrPem;
    const unbound = await refusal(rawCall(t, { csr: csrAgent }, bearer('agent-unbound')));
    expect(unbound.code).toBe(grpc.status.UNAUTHENTICATED);
    // The agent's own path is unchanged.
    const ok = await rawCall(t, { csr: csrs.reviews, metadata: impersonate(REVIEWS) }, bearer('agent'));
    expect(new X509Certificate(ok.cert_chain[0]!).subjectAltName).toBe(`URI:${REVIEWS}`);
  });

  it('without a required audience no workload is accepted (any pod token would do otherwise)', async () => {
    const dir = tmpDir();
    dirs.push(dir);
    const open = new TokenReviewAuthenticator(loadKubeConfig({ kubeconfig: api.writeKubeconfig(dir) }), { agentServiceAccounts: ['istio-system/weft-agent'], audiences: [] });
    expect(await open.workloads.authenticate('default-token')).toBeUndefined();
    expect(await open.workloads.authenticate('waypoint')).toBeUndefined();
    expect(open.reviews).toBe(0);
  });

  it("never uses a cached review past the token's own expiry: once expired, the API server refuses it", async () => {
    const exp = now() + 3; // seconds: room for the first issue even on a busy machine (exp is whole seconds)
    const jwt = `h.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.sig`;
    tokens[jwt] = { namespace: 'bookinfo', serviceAccount: 'waypoint', audiences: ['istio-ca'], node: 'node-a', exp };
    try {
      const res = await rawCall(t, { csr: csrs.waypoint }, bearer(jwt));
      expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
      await sleep(exp * 1000 - Date.now() + 100);
      const e = await refusal(rawCall(t, { csr: csrs.waypoint }, bearer(jwt)));
      expect(e.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(reviewsOf(jwt)).toBe(2); // reviewed again, not answered from the cache (cacheMs is 30 s)
    } finally {
      delete tokens[jwt];
    }
  });

  it('an API error is UNAVAILABLE and not cached: the next request is reviewed and issued', async () => {
    const { r, ca } = await make();
    try {
      let fail = 1;
      api.fault = (q) => (q.path === '/apis/authentication.k8s.io/v1/tokenreviews' && fail-- > 0 ? 500 : undefined);
      const e = await refusal(rawCall(ca, { csr: csrs.waypoint }, bearer('waypoint')));
      expect(e.code).toBe(grpc.status.UNAVAILABLE);
      expect(e.details).toMatch(/authenticator failed/);
      expect(r.cached).toEqual({ positive: 0, negative: 0 });
      const res = await rawCall(ca, { csr: csrs.waypoint }, bearer('waypoint'));
      expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT}`);
      expect(ca.counters.refused.UNAVAILABLE).toBe(1);
      expect(ca.counters.issued).toBe(1);
    } finally {
      api.fault = undefined;
      await ca.stop();
    }
  });

  it('a flood of bad tokens over gRPC stays within the bounded caches, and a good token stays cached', async () => {
    const { r, ca } = await make({ maxEntries: 50 });
    try {
      await rawCall(ca, { csr: csrs.waypoint }, bearer('waypoint'));
      const before = r.reviews;
      const codes = new Set<grpc.status>();
      const Client = caServiceClient();
      const c = new Client(ca.address, grpc.credentials.createSsl(Buffer.from(ca.ca.rootPem)), { 'grpc.ssl_target_name_override': SERVER_NAME }) as unknown as grpc.Client & Record<string, (...a: unknown[]) => void>;
      const call = (token: string) =>
        new Promise<grpc.status>((resolve) => {
          const md = new grpc.Metadata();
          md.set('authorization', `Bearer ${token}`);
          c.CreateCertificate!({ csr: csrs.waypoint, validity_duration: 0 }, md, (err: grpc.ServiceError | null) => resolve(err ? err.code : grpc.status.OK));
        });
      try {
        for (let batch = 0; batch < 6; batch++) (await Promise.all(Array.from({ length: 50 }, (_, i) => call(`bad-${batch}-${i}`)))).forEach((code) => codes.add(code));
      } finally {
        c.close();
      }
      // Each a refusal: unknown (UNAUTHENTICATED), or, beyond the reviews allowed in flight, UNAVAILABLE.
      expect([...codes].every((c) => c === grpc.status.UNAUTHENTICATED || c === grpc.status.UNAVAILABLE)).toBe(true);
      expect(r.cached.negative).toBeLessThanOrEqual(50);
      expect(r.cached.positive).toBe(1);
      const n = r.reviews;
      expect(n - before).toBeLessThanOrEqual(300);
      await rawCall(ca, { csr: csrs.waypoint }, bearer('waypoint'));
      expect(r.reviews).toBe(n); // the good token was not pushed out
      expect(ca.counters.issued).toBe(2);
    } finally {
      await ca.stop();
    }
  });
});
