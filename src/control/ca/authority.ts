// The mesh CA: signs workload certificates for identities the caller has already authorized, and
// the control plane's own serving certificate. Leaf SANs come from the caller, never from a CSR.
import { createPublicKey } from 'node:crypto';
import { isIP } from 'node:net';
import { DEFAULT_TRUST_DOMAIN, formatSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import type { CAMaterial } from './material.ts';
import { pluggedCA } from './plugged.ts';
import { dirRootStore, selfSignedCA, type RootStore } from './self-signed.ts';
import { generateP256, privateKeyPem, x509 } from './x509.ts';

export interface CAOptions {
  trustDomain?: string;
  /** Default: a self-signed root kept in memory; `dir` or `store` keep it across restarts. */
  source?: { type: 'self-signed'; dir?: string; store?: RootStore } | { type: 'plugged'; dir: string };
  /** Workload TTL when the request asks for none. Default 24 h. */
  defaultTtlSeconds?: number;
  /** Longest workload TTL granted. Default 90 days (Istio's default max). */
  maxTtlSeconds?: number;
}

export interface ServerCertOptions {
  dnsNames: string[];
  ipAddresses?: string[];
  /** Default 1 year; the caller reissues before then. */
  ttlSeconds?: number;
}

export interface IssuedKeyPair {
  keyPem: string;
  /** Leaf first, then intermediates; no root. */
  certChainPem: string;
  rootPem: string;
  notAfter: Date;
}

/** The CSR itself is unusable: maps to INVALID_ARGUMENT. */
export class CsrError extends Error {}

/** The CSR asks for another identity than the caller proved: maps to PERMISSION_DENIED. */
export class CsrIdentityError extends Error {}

export interface SignOptions {
  /**
   * The CSR must ask for exactly this identity: its one SAN is the identity's SPIFFE URI. For a
   * workload asking for its own certificate, where nothing else says which identity it meant.
   * (A node agent names the identity in the request; its CSR's SAN is informational.)
   */
  csrMustName?: boolean;
}

const DAY = 86_400;

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootPem: string;
  private readonly defaultTtl: number;
  private readonly maxTtl: number;
  private readonly issuer: x509.X509Certificate;

  private constructor(
    private readonly m: CAMaterial,
    opts: CAOptions,
    trustDomain: string,
  ) {
    this.trustDomain = trustDomain;
    this.rootPem = m.rootPem;
    this.defaultTtl = opts.defaultTtlSeconds ?? DAY;
    this.maxTtl = opts.maxTtlSeconds ?? 90 * DAY;
    this.issuer = new x509.X509Certificate(m.cert.raw);
  }

  static async create(opts: CAOptions = {}): Promise<CertificateAuthority> {
    const td = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const src = opts.source ?? { type: 'self-signed' };
    const m = src.type === 'plugged' ? await pluggedCA(src.dir) : await selfSignedCA(td, src.store ?? (src.dir ? dirRootStore(src.dir) : undefined));
    return new CertificateAuthority(m, opts, td);
  }

  /** Chain for a CSR: leaf, intermediates, root. Throws CsrError for a bad CSR. */
  async signWorkload(csrPem: string, id: SpiffeId, ttlSeconds?: number, o: SignOptions = {}): Promise<string[]> {
    if (id.trustDomain !== this.trustDomain) throw new Error(`identity is outside trust domain ${this.trustDomain}`);
    const csr = await parseCsr(csrPem);
    if (o.csrMustName) checkCsrNames(csr, formatSpiffe(id));
    const ttl = ttlSeconds && ttlSeconds > 0 ? Math.min(ttlSeconds, this.maxTtl) : this.defaultTtl;
    const leaf = await this.issue(csr.publicKey, [{ type: 'url', value: formatSpiffe(id) }], ttl);
    return [leaf.toString('pem'), ...this.m.intermediatePems, this.m.rootPem];
  }

  /** A key and certificate for the control plane's own TLS port (15012). */
  async issueServerCert(o: ServerCertOptions): Promise<IssuedKeyPair> {
    const keys = await generateP256();
    const names: x509.JsonGeneralNames = [
      ...o.dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...(o.ipAddresses ?? []).map((value) => {
        if (!isIP(value)) throw new Error(`not an IP address: ${value}`);
        return { type: 'ip' as const, value };
      }),
    ];
    const leaf = await this.issue(keys.publicKey, names, o.ttlSeconds ?? 365 * DAY);
    return {
      keyPem: await privateKeyPem(keys.privateKey),
      certChainPem: [leaf.toString('pem'), ...this.m.intermediatePems].map((p) => p.trim()).join('\n') + '\n',
      rootPem: this.m.rootPem,
      notAfter: leaf.notAfter,
    };
  }

  private async issue(publicKey: x509.PublicKeyType, sans: x509.JsonGeneralNames, ttlSeconds: number) {
    const now = new Date();
    // Never outlive the issuer: a leaf past its CA's expiry would fail verification anyway.
    const notAfter = new Date(Math.min(now.getTime() + ttlSeconds * 1000, this.issuer.notAfter.getTime()));
    const ski = this.issuer.getExtension(x509.SubjectKeyIdentifierExtension);
    return x509.X509CertificateGenerator.create({
      subject: '',
      issuer: this.issuer.subjectName,
      publicKey,
      signingKey: this.m.signer.key,
      signingAlgorithm: this.m.signer.algorithm,
      notBefore: now,
      notAfter,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        // Empty subject: RFC 5280 then requires the SAN to be critical.
        new x509.SubjectAlternativeNameExtension(sans, true),
        ski
          ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
          : await x509.AuthorityKeyIdentifierExtension.create(this.issuer.publicKey),
      ],
    });
  }
}

/** A well-formed, self-consistent PKCS#10 request for an ECDSA P-256 key. */
async function parseCsr(pem: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch (e) {
    throw new CsrError(`unparseable CSR: ${(e as Error).message}`);
  }
  if (!(await csr.verify().catch(() => false))) throw new CsrError('CSR signature does not verify');
  const key = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CsrError('CSR key must be ECDSA P-256');
  }
  return csr;
}

const SUBJECT_ALT_NAME = '2.5.29.17';

/** The CSR's SAN (from its extensionRequest) is exactly the one URI `uri`. */
function checkCsrNames(csr: x509.Pkcs10CertificateRequest, uri: string): void {
  let names: readonly x509.GeneralName[];
  try {
    const ext = csr.extensions.find((e) => e.type === SUBJECT_ALT_NAME);
    if (!ext) throw new CsrError('CSR names no identity: want its SPIFFE ID as its one URI SAN');
    names = new x509.SubjectAlternativeNameExtension(ext.rawData).names.items;
  } catch (e) {
    if (e instanceof CsrError) throw e;
    throw new CsrError(`CSR subjectAltName unreadable: ${(e as Error).message}`);
  }
  const asked = names.map((n) => `${n.type}:${n.value}`).join(', ');
  if (names.length !== 1 || names[0]!.type !== 'url' || names[0]!.value !== uri) {
    // The names are the caller's: a bounded excerpt goes back in the status and the log.
    const shown = asked.length > 200 ? `${asked.slice(0, 200)}...` : asked || 'nothing';
    throw new CsrIdentityError(`CSR asks for ${shown}; the caller's credential is for ${uri} only`);
  }
}
