import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../../src/identity/csr.ts';
import { CertificateAuthority } from '../../../src/control/ca/index.ts';
import { id, impersonate, opensslVerify, rawCall, startCA, tmpDir, writePluggedCA, type TestCA } from './helpers.ts';

const REVIEWS = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
const dirs: string[] = [];
let t: TestCA;
let csrPem: string;

beforeAll(async () => {
  dirs.push(tmpDir());
  t = await startCA(await CertificateAuthority.create(), dirs[0]!);
  t.scheduled.add(`node-a|${REVIEWS}`);
  csrPem = (await createKeyAndCsr(id('bookinfo', 'reviews'))).csrPem;
});
afterAll(async () => {
  await t?.stop();
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

const asNodeA = { authorization: 'Bearer tok-a' };

async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('expected a refusal');
}

describe('IstioCertificateService over TLS', () => {
  it('issues for an identity scheduled on the calling node; openssl verifies the chain', async () => {
    const res = await rawCall(t, { csr: csrPem, validity_duration: 3600, metadata: impersonate(REVIEWS) }, asNodeA);
    expect(res.cert_chain).toHaveLength(2);
    expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${REVIEWS}`);
    expect(await opensslVerify(res.cert_chain)).toContain('OK');
    expect(t.results.at(-1)).toMatchObject({ code: grpc.status.OK, node: 'node-a', identity: REVIEWS });
  });

  it.each([
    ['no token', {}, REVIEWS, grpc.status.UNAUTHENTICATED, /no bearer token/],
    ['a non-bearer token', { authorization: 'Basic tok-a' }, REVIEWS, grpc.status.UNAUTHENTICATED, /no bearer token/],
    ['an unknown token', { authorization: 'Bearer nope' }, REVIEWS, grpc.status.UNAUTHENTICATED, /unknown token/],
    ['the wrong node', { authorization: 'Bearer tok-b' }, REVIEWS, grpc.status.PERMISSION_DENIED, /not scheduled|no pod/],
    ['a foreign trust domain', asNodeA, 'spiffe://evil.org/ns/bookinfo/sa/reviews', grpc.status.PERMISSION_DENIED, /trust domain/],
    ['an identity not on the node', asNodeA, 'spiffe://cluster.local/ns/bookinfo/sa/ratings', grpc.status.PERMISSION_DENIED, /no pod/],
    ['a non-SPIFFE identity', asNodeA, 'spiffe://cluster.local/foo', grpc.status.INVALID_ARGUMENT, /not a SPIFFE/],
  ] as const)('refuses %s', async (_name, headers, uri, code, reason) => {
    const e = await refusal(rawCall(t, { csr: csrPem, metadata: impersonate(uri) }, headers));
    expect(e.code).toBe(code);
    expect(e.details).toMatch(reason);
    expect(t.results.at(-1)?.code).toBe(code);
    expect(t.logs.at(-1)).toMatchObject({ msg: 'certificate refused', code: grpc.status[code], reason: expect.stringMatching(reason) });
    if (code !== grpc.status.UNAUTHENTICATED) expect(t.logs.at(-1)).toMatchObject({ node: expect.any(String), identity: uri });
  });

  it('refuses a request without ImpersonatedIdentity, and garbage CSRs', async () => {
    const e1 = await refusal(rawCall(t, { csr: csrPem }, asNodeA));
    expect(e1.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e1.details).toMatch(/ImpersonatedIdentity/);
    const e2 = await refusal(rawCall(t, { csr: 'garbage', metadata: impersonate(REVIEWS) }, asNodeA));
    expect(e2.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e2.details).toMatch(/CSR/);
    expect(t.results.at(-1)).toMatchObject({ node: 'node-a', identity: REVIEWS, code: grpc.status.INVALID_ARGUMENT });
  });

  it('counts outcomes by status', () => {
    expect(t.counters.issued).toBeGreaterThanOrEqual(1);
    expect(t.counters.refused.UNAUTHENTICATED).toBe(3);
    expect(t.counters.refused.PERMISSION_DENIED).toBe(3);
    expect(t.counters.refused.INVALID_ARGUMENT).toBeGreaterThanOrEqual(3);
  });

  it('picks up added and revoked tokens from the token file', async () => {
    writeFileSync(t.tokenFile, JSON.stringify({ 'tok-new': 'node-a' }));
    const ok = await rawCall(t, { csr: csrPem, metadata: impersonate(REVIEWS) }, { authorization: 'Bearer tok-new' });
    expect(ok.cert_chain).toHaveLength(2);
    const e = await refusal(rawCall(t, { csr: csrPem, metadata: impersonate(REVIEWS) }, asNodeA));
    expect(e.code).toBe(grpc.status.UNAUTHENTICATED);
    writeFileSync(t.tokenFile, JSON.stringify({ 'tok-a': 'node-a', 'tok-b': 'node-b' }));
  });

  it('serves a plugged-in intermediate: leaf, intermediate, root', async () => {
    const dir = tmpDir();
    dirs.push(dir);
    await writePluggedCA(dir);
    const p = await startCA(await CertificateAuthority.create({ source: { type: 'plugged', dir } }), dir);
    try {
      p.scheduled.add(`node-b|${REVIEWS}`);
      const res = await rawCall(p, { csr: csrPem, metadata: impersonate(REVIEWS) }, { authorization: 'Bearer tok-b' });
      expect(res.cert_chain).toHaveLength(3);
      expect(await opensslVerify(res.cert_chain)).toContain('OK');
      expect(new X509Certificate(res.cert_chain[0]!).subjectAltName).toBe(`URI:${REVIEWS}`);
    } finally {
      await p.stop();
    }
  });
});
