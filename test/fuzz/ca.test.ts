// CreateCertificate over real gRPC TLS with arbitrary and mutated CSRs (PEM and DER, other key
// types, several blocks), identities near the one the caller owns, tokens and TTLs. Properties:
// the CA never crashes and answers every request with a certificate or a clean refusal
// (INVALID_ARGUMENT / PERMISSION_DENIED / UNAUTHENTICATED, never INTERNAL); a certificate is issued
// only to a node for an identity scheduled on it, or to a workload token without impersonation
// whose CSR names exactly its own identity; it names exactly that identity, carries the CSR's key,
// and lives no longer than asked (or the default).
import * as grpc from '@grpc/grpc-js';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { rmSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import { caServiceClient, type IstioCertificateResponse } from '../../src/api/ca.ts';
import { x509 } from '../../src/control/ca/x509.ts';
import { SERVER_NAME, id, impersonate, startCA, tmpDir, type TestCA } from '../control/ca/helpers.ts';
import { fuzz, testTimeout } from './fuzz.ts';

const OWNED = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';
const NOT_SCHEDULED = 'spiffe://cluster.local/ns/bookinfo/sa/ratings';
const DEFAULT_TTL = 86_400;
const MAX_TTL = 90 * 86_400;

let dir: string;
let t: TestCA;
let client: grpc.Client & Record<string, (...a: unknown[]) => void>;
/** Well-formed CSRs to start from: P-256 for the owned and another identity, and the wrong key types. */
const seeds: Record<string, Buffer> = {};

const pemToDer = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
const derToPem = (der: Buffer, label = 'CERTIFICATE REQUEST') =>
  `-----BEGIN ${label}-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END ${label}-----\n`;

async function otherKeyCsr(alg: RsaHashedKeyGenParams | EcKeyGenParams, sign: RsaHashedImportParams | EcdsaParams): Promise<Buffer> {
  const keys = (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: sign, extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: OWNED }])] });
  return Buffer.from(csr.rawData);
}

beforeAll(async () => {
  dir = tmpDir('weft-fuzz-ca-');
  // Workload tokens too (wl-reviews is OWNED's service account), so CSR names are parsed as a workload's.
  t = await startCA(await CertificateAuthority.create({ defaultTtlSeconds: DEFAULT_TTL, maxTtlSeconds: MAX_TTL }), dir, undefined, { workloads: 'file' });
  t.scheduled.add(`node-a|${OWNED}`);
  seeds.p256 = pemToDer((await createKeyAndCsr(id('bookinfo', 'reviews'))).csrPem);
  seeds.p256Other = pemToDer((await createKeyAndCsr(id('kube-system', 'admin'))).csrPem);
  seeds.p384 = await otherKeyCsr({ name: 'ECDSA', namedCurve: 'P-384' }, { name: 'ECDSA', hash: 'SHA-384' });
  seeds.rsa = await otherKeyCsr({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as RsaHashedImportParams);
  const Client = caServiceClient();
  client = new Client(t.address, grpc.credentials.createSsl(Buffer.from(t.ca.rootPem)), { 'grpc.ssl_target_name_override': SERVER_NAME }) as unknown as typeof client;
}, 60_000);
afterAll(async () => {
  client?.close();
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface CaInput {
  csr: string;
  identity: string;
  token: string | null;
  ttl: number;
  /** false: no ImpersonatedIdentity (a workload asking for itself); absent (older corpus entries): true. */
  impersonate?: boolean;
}

type Mutation = { at: number; op: 'set' | 'insert' | 'delete' | 'truncate'; byte: number };
const mutation: fc.Arbitrary<Mutation> = fc.record({ at: fc.nat(), op: fc.constantFrom('set', 'insert', 'delete', 'truncate'), byte: fc.nat(255) });
function mutate(der: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(der);
  for (const m of ms) {
    const at = b.length ? m.at % b.length : 0;
    if (m.op === 'set' && b.length) b[at] = m.byte;
    else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
    else if (m.op === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    else b = b.subarray(0, at);
  }
  return b;
}

type SeedName = 'p256' | 'p256Other' | 'p384' | 'rsa';
/** How to build the CSR text from this run's seed CSRs: plain data, so the corpus can keep it. */
type CsrSpec =
  | { kind: 'seed' | 'base64' | 'hex' | 'latin1' | 'crlf'; seed: SeedName }
  | { kind: 'mutated'; seed: SeedName; muts: Mutation[] }
  | { kind: 'label'; seed: SeedName; label: string }
  | { kind: 'two'; seed: SeedName; seed2: SeedName }
  | { kind: 'text'; text: string }
  | { kind: 'bytes'; bytes: Buffer };

function csrText(c: CsrSpec): string {
  switch (c.kind) {
    case 'seed': return derToPem(seeds[c.seed]!);
    case 'mutated': return derToPem(mutate(seeds[c.seed]!, c.muts));
    case 'label': return derToPem(seeds[c.seed]!, c.label);
    case 'two': return derToPem(seeds[c.seed]!) + derToPem(seeds[c.seed2]!);
    case 'base64': return seeds[c.seed]!.toString('base64');
    case 'hex': return seeds[c.seed]!.toString('hex');
    case 'latin1': return seeds[c.seed]!.toString('latin1');
    case 'crlf': return derToPem(seeds[c.seed]!).replace(/\n/g, '\r\n').replace('-----BEGIN', '  \n-----BEGIN');
    case 'text': return c.text;
    case 'bytes': return derToPem(c.bytes);
  }
}

const seedName = fc.constantFrom<SeedName>('p256', 'p256', 'p256', 'p256Other', 'p384', 'rsa');
const csrArb: fc.Arbitrary<CsrSpec> = fc.oneof(
  { weight: 3, arbitrary: seedName.map((seed): CsrSpec => ({ kind: 'seed', seed })) },
  { weight: 4, arbitrary: fc.tuple(seedName, fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([seed, muts]): CsrSpec => ({ kind: 'mutated', seed, muts })) },
  { weight: 2, arbitrary: fc.tuple(seedName, fc.constantFrom('CERTIFICATE', 'PRIVATE KEY', 'NEW CERTIFICATE REQUEST', '')).map(([seed, label]): CsrSpec => ({ kind: 'label', seed, label })) },
  { weight: 1, arbitrary: fc.tuple(seedName, seedName).map(([seed, seed2]): CsrSpec => ({ kind: 'two', seed, seed2 })) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('base64', 'hex', 'latin1', 'crlf') as fc.Arbitrary<'base64' | 'hex' | 'latin1' | 'crlf'>, seedName).map(([kind, seed]): CsrSpec => ({ kind, seed })) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((text): CsrSpec => ({ kind: 'text', text })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 400 }).map((a): CsrSpec => ({ kind: 'bytes', bytes: Buffer.from(a) })) },
);

const identityArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(OWNED) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      NOT_SCHEDULED,
      'spiffe://cluster.local/ns/bookinfo/sa/reviews/',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews/x',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews?x',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews#x',
      'spiffe://cluster.local/ns/bookinfo/sa/review%73',
      'spiffe://CLUSTER.LOCAL/ns/bookinfo/sa/reviews',
      'SPIFFE://cluster.local/ns/bookinfo/sa/reviews',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews\n',
      ' spiffe://cluster.local/ns/bookinfo/sa/reviews',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews\u0000',
      'spiffe://evil.org/ns/bookinfo/sa/reviews',
      'spiffe://cluster.local/ns/../sa/reviews',
      'spiffe://cluster.local/ns/bookinfo/sa/reviews,URI:spiffe://cluster.local/ns/kube-system/sa/admin',
      '',
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }).map((s) => `spiffe://cluster.local/ns/${s}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }) },
);

interface CaSpec extends Omit<CaInput, 'csr'> {
  csr: CsrSpec;
}
const caInput: fc.Arbitrary<CaSpec> = fc.record({
    csr: csrArb,
    identity: identityArb,
    token: fc.oneof({ weight: 8, arbitrary: fc.constant('tok-a') }, { weight: 3, arbitrary: fc.constant('wl-reviews') }, { weight: 1, arbitrary: fc.constantFrom('tok-b', 'wl-waypoint', 'nope', '', null) }),
    impersonate: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  ttl: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(0, 3600) }, { weight: 1, arbitrary: fc.constantFrom(-1, 1, MAX_TTL + 1, 2 ** 31 - 1, 2 ** 53) }, { weight: 1, arbitrary: fc.integer() }),
});

function call(input: CaInput): Promise<{ res?: IstioCertificateResponse; err?: grpc.ServiceError }> {
  const md = new grpc.Metadata();
  if (input.token !== null) md.set('authorization', `Bearer ${input.token}`);
  return new Promise((resolve) =>
    client.CreateCertificate!(
      { csr: input.csr, validity_duration: input.ttl, ...(input.impersonate !== false ? { metadata: impersonate(input.identity) } : {}) },
      md,
      { deadline: Date.now() + 10_000 },
      (err: grpc.ServiceError | null, res: IstioCertificateResponse) => resolve(err ? { err } : { res }),
    ),
  );
}

const CLEAN = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED]);

async function property(input: CaInput): Promise<string> {
  const before = Date.now();
  const { res, err } = await call(input);
  if (err) {
    if (!CLEAN.has(err.code)) throw new Error(`CA answered ${grpc.status[err.code]} (${err.details}) for ${JSON.stringify(input).slice(0, 300)}`);
    return `${grpc.status[err.code]}: ${err.details.replace(/:.*$/, '')}`;
  }
  // Issued: only what the caller owns, for the key in the CSR, for no longer than allowed.
  const csr = new x509.Pkcs10CertificateRequest(input.csr);
  // An empty ImpersonatedIdentity names nobody: no impersonation (as Istio reads it).
  if (input.impersonate !== false && input.identity !== '') {
    expect(input.token).toBe('tok-a');
    expect(input.identity).toBe(OWNED);
  } else {
    // A workload for itself: its own token, and a CSR naming exactly its identity.
    expect(input.token).toBe('wl-reviews');
    const san = csr.extensions.find((e) => e.type === '2.5.29.17');
    expect(new x509.SubjectAlternativeNameExtension(san!.rawData).names.toJSON()).toEqual([{ type: 'url', value: OWNED }]);
  }
  const leaf = new X509Certificate(res!.cert_chain[0]!);
  expect(leaf.subjectAltName).toBe(`URI:${OWNED}`);
  expect(leaf.verify(createPublicKey(t.ca.rootPem))).toBe(true);
  expect(leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(Buffer.from(csr.publicKey.rawData))).toBe(true);
  const asked = input.ttl > 0 ? Math.min(input.ttl, MAX_TTL) : DEFAULT_TTL;
  expect(Date.parse(leaf.validTo)).toBeLessThanOrEqual(before + asked * 1000 + 2000);
  return 'issued';
}

describe('fuzz: CA CreateCertificate', () => {
  it(
    'issues only what the caller owns and refuses the rest cleanly',
    async () => {
      const { runs, signatures } = await fuzz('ca', caInput, (spec) => property({ ...spec, csr: csrText(spec.csr) }));
      expect(runs).toBeGreaterThan(0);
      expect(signatures.get('issued') ?? 0).toBeGreaterThan(0);
      // Still serving a well-behaved caller.
      expect(await property({ csr: derToPem(seeds.p256!), identity: OWNED, token: 'tok-a', ttl: 3600 })).toBe('issued');
    },
    testTimeout('ca'),
  );

  it('keeps only P-256 keys (a P-384 or RSA CSR is INVALID_ARGUMENT naming the key type)', async () => {
    for (const n of ['p384', 'rsa']) {
      const { err } = await call({ csr: derToPem(seeds[n]!), identity: OWNED, token: 'tok-a', ttl: 0 });
      expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err?.details).toMatch(/P-256/);
    }
  });
});
