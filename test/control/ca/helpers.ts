// Shared by the CA and agent identity tests: a real CA behind real gRPC TLS on 127.0.0.1,
// a plugged-in intermediate made in-test, and `openssl verify` as the independent judge.
import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { parseSpiffe, type SpiffeId } from '../../../src/api/spiffe.ts';
import {
  CertificateAuthority,
  StaticTokenAuthenticator,
  StaticWorkloadTokenAuthenticator,
  caServerCredentials,
  registerCAService,
  type CACounters,
  type CAResult,
  type NodeAuthenticator,
  type WorkloadAuthenticator,
} from '../../../src/control/ca/index.ts';
import { caServiceClient, type IstioCertificateRequest, type IstioCertificateResponse } from '../../../src/api/ca.ts';
import { P256, generateP256, privateKeyPem, x509 } from '../../../src/control/ca/x509.ts';

export const SERVER_NAME = 'weft-control.istio-system.svc';
export const silent = pino({ level: 'silent' });

export function tmpDir(prefix = 'weft-ca-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export const id = (ns: string, sa: string, trustDomain = 'cluster.local'): SpiffeId => ({ trustDomain, namespace: ns, serviceAccount: sa });

export interface TestCA {
  ca: CertificateAuthority;
  address: string;
  tokenFile: string;
  /** Workload tokens (used when started with `workloads: 'file'`): wl-waypoint → bookinfo/waypoint, wl-reviews → bookinfo/reviews. */
  workloadTokenFile: string;
  /** "node|spiffe-uri" pairs the fake scheduler answers yes for; tests edit it live. */
  scheduled: Set<string>;
  counters: CACounters;
  results: CAResult[];
  /** The CA's log lines, parsed. */
  logs: Record<string, unknown>[];
  stop(): Promise<void>;
}

export interface StartCAOptions {
  /** Node credentials other than the token file (TokenReview). */
  authenticator?: NodeAuthenticator;
  /** Workload credentials: the workload token file, or another authenticator; none: node agents only. */
  workloads?: 'file' | WorkloadAuthenticator;
}

export const WORKLOAD_TOKENS = { 'wl-waypoint': 'bookinfo/waypoint', 'wl-reviews': 'bookinfo/reviews' };

/** Tokens: tok-a → node-a, tok-b → node-b. */
export async function startCA(ca: CertificateAuthority, dir: string, handlers?: grpc.UntypedServiceImplementation, opts: StartCAOptions = {}): Promise<TestCA> {
  const tokenFile = join(dir, 'tokens.json');
  writeFileSync(tokenFile, JSON.stringify({ 'tok-a': 'node-a', 'tok-b': 'node-b' }));
  const workloadTokenFile = join(dir, 'workload-tokens.json');
  writeFileSync(workloadTokenFile, JSON.stringify(WORKLOAD_TOKENS));
  const scheduled = new Set<string>();
  const results: CAResult[] = [];
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const server = new grpc.Server();
  let counters: CACounters = { issued: 0, refused: {} };
  if (handlers) server.addService(caServiceClient().service, handlers);
  else
    counters = registerCAService(server, {
      ca,
      authenticator: opts.authenticator ?? (await StaticTokenAuthenticator.open(tokenFile)),
      workloads: opts.workloads === 'file' ? await StaticWorkloadTokenAuthenticator.open(workloadTokenFile) : opts.workloads,
      canIssue: (node, sid) => scheduled.has(`${node}|spiffe://${sid.trustDomain}/ns/${sid.namespace}/sa/${sid.serviceAccount}`),
      log,
      onResult: (r) => results.push(r),
    });
  const kp = await ca.issueServerCert({ dnsNames: [SERVER_NAME], ipAddresses: ['127.0.0.1'] });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', caServerCredentials(kp), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    ca,
    address: `127.0.0.1:${port}`,
    tokenFile,
    workloadTokenFile,
    scheduled,
    counters,
    results,
    logs,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

/** One CreateCertificate call with whatever metadata the test wants, bypassing the agent client. */
export function rawCall(
  t: TestCA,
  req: Partial<IstioCertificateRequest>,
  headers: Record<string, string>,
): Promise<IstioCertificateResponse> {
  const Client = caServiceClient();
  const c = new Client(t.address, grpc.credentials.createSsl(Buffer.from(t.ca.rootPem)), {
    'grpc.ssl_target_name_override': SERVER_NAME,
  }) as unknown as grpc.Client & Record<string, (...a: unknown[]) => void>;
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return new Promise((resolve, reject) =>
    c.CreateCertificate!({ csr: '', validity_duration: 0, ...req }, md, (err: Error | null, res: IstioCertificateResponse) => {
      c.close();
      if (err) reject(err);
      else resolve(res);
    }),
  );
}

export const impersonate = (uri: string) => ({ fields: { ImpersonatedIdentity: { stringValue: uri } } });

/** Writes Istio's cacerts layout: an intermediate (ECDSA P-256) under a fresh root. */
export async function writePluggedCA(dir: string, trustDomain = 'cluster.local'): Promise<{ rootPem: string; intermediatePem: string }> {
  const now = Date.now();
  const rootKeys = await generateP256();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=Test Root CA, O=weft-test',
    keys: rootKeys,
    signingAlgorithm: P256,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 365 * 86_400_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const interKeys = await generateP256();
  const inter = await x509.X509CertificateGenerator.create({
    subject: `CN=Intermediate CA, O=${trustDomain}`,
    issuer: root.subject,
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: P256,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 180 * 86_400_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const rootPem = root.toString('pem') + '\n';
  const intermediatePem = inter.toString('pem') + '\n';
  writeFileSync(join(dir, 'root-cert.pem'), rootPem);
  writeFileSync(join(dir, 'ca-cert.pem'), intermediatePem);
  writeFileSync(join(dir, 'ca-key.pem'), await privateKeyPem(interKeys.privateKey));
  writeFileSync(join(dir, 'cert-chain.pem'), intermediatePem + rootPem);
  return { rootPem, intermediatePem };
}

/**
 * `openssl verify -CAfile root -untrusted intermediates leaf` on a chain as the CA returns it
 * (leaf first, root last). Resolves with openssl's output; rejects if it does not verify.
 */
export async function opensslVerify(chain: string[]): Promise<string> {
  const dir = tmpDir('weft-verify-');
  try {
    const leaf = join(dir, 'leaf.pem');
    const root = join(dir, 'root.pem');
    const untrusted = join(dir, 'chain.pem');
    writeFileSync(leaf, chain[0]!);
    writeFileSync(root, chain[chain.length - 1]!);
    const args = ['verify', '-x509_strict', '-CAfile', root];
    if (chain.length > 2) {
      writeFileSync(untrusted, chain.slice(1, -1).join('\n'));
      args.push('-untrusted', untrusted);
    }
    const { stdout } = await promisify(execFile)('openssl', [...args, leaf]);
    return stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function spiffeOf(uri: string): SpiffeId {
  const s = parseSpiffe(uri);
  if (!s) throw new Error(`not spiffe: ${uri}`);
  return s;
}
