import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CertificateAuthority, CsrError } from '../../../src/control/ca/index.ts';
import { createKeyAndCsr } from '../../../src/identity/csr.ts';
import { id, opensslVerify, tmpDir, writePluggedCA } from './helpers.ts';

const dirs: string[] = [];
const newDir = () => {
  const d = tmpDir();
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const bookinfo = id('bookinfo', 'reviews');
const lifetimeS = (c: X509Certificate) => (Date.parse(c.validTo) - Date.parse(c.validFrom)) / 1000;

describe('self-signed root CA', () => {
  it('issues a P-256 workload leaf with only the authorized SPIFFE SAN, verified by openssl', async () => {
    const ca = await CertificateAuthority.create();
    // The CSR asks for another identity: the CA must ignore it.
    const { csrPem } = await createKeyAndCsr(id('kube-system', 'admin'));
    const chain = await ca.signWorkload(csrPem, bookinfo);
    expect(chain).toHaveLength(2);
    expect(chain[1]).toBe(ca.rootPem);
    expect(await opensslVerify(chain)).toContain('OK');

    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/bookinfo/sa/reviews');
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(lifetimeS(leaf)).toBe(86_400);
    const root = new X509Certificate(ca.rootPem);
    expect(root.ca).toBe(true);
    expect(lifetimeS(root)).toBeGreaterThan(9 * 365 * 86_400);
    expect(root.subject).toContain('O=cluster.local');
  });

  it('has the workload key usages and honours / caps the requested TTL', async () => {
    const ca = await CertificateAuthority.create({ maxTtlSeconds: 3600 });
    const { csrPem } = await createKeyAndCsr(bookinfo);
    const short = new X509Certificate((await ca.signWorkload(csrPem, bookinfo, 10))[0]!);
    expect(lifetimeS(short)).toBe(10);
    const capped = new X509Certificate((await ca.signWorkload(csrPem, bookinfo, 7 * 86_400))[0]!);
    expect(lifetimeS(capped)).toBe(3600);
    const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'keyUsage,extendedKeyUsage,basicConstraints,subjectAltName'], {
      input: short.toString(),
    }).toString();
    expect(text).toMatch(/Digital Signature, Key Encipherment/);
    expect(text).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/CA:FALSE/);
    expect(text).toMatch(/Subject Alternative Name: critical/);
  });

  it('refuses garbage, a tampered CSR, a non-P-256 key and foreign trust domains', async () => {
    const ca = await CertificateAuthority.create();
    await expect(ca.signWorkload('not a csr', bookinfo)).rejects.toBeInstanceOf(CsrError);
    const { csrPem } = await createKeyAndCsr(bookinfo);
    const body = csrPem.split('\n');
    body[3] = body[3]!.replace(/[A-Za-z]/, (c) => (c === 'A' ? 'B' : 'A'));
    await expect(ca.signWorkload(body.join('\n'), bookinfo)).rejects.toBeInstanceOf(CsrError);
    const rsaCsr = execFileSync('sh', ['-c', 'openssl req -new -newkey rsa:2048 -nodes -keyout /dev/null -subj /CN=x 2>/dev/null']).toString();
    await expect(ca.signWorkload(rsaCsr, bookinfo)).rejects.toThrow(/P-256/);
    await expect(ca.signWorkload(csrPem, id('ns', 'sa', 'evil.org'))).rejects.toThrow(/trust domain/);
  });

  it('persists its root in a directory and reuses it', async () => {
    const dir = newDir();
    const a = await CertificateAuthority.create({ source: { type: 'self-signed', dir }, trustDomain: 'example.org' });
    const b = await CertificateAuthority.create({ source: { type: 'self-signed', dir }, trustDomain: 'example.org' });
    expect(b.rootPem).toBe(a.rootPem);
    const { csrPem } = await createKeyAndCsr(id('x', 'y', 'example.org'));
    const chain = await b.signWorkload(csrPem, id('x', 'y', 'example.org'));
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe('URI:spiffe://example.org/ns/x/sa/y');
    expect(await opensslVerify([chain[0]!, a.rootPem])).toContain('OK');

    unlinkSync(join(dir, 'ca-key.pem'));
    await expect(CertificateAuthority.create({ source: { type: 'self-signed', dir } })).rejects.toThrow(/ca-key\.pem is missing/);
  });

  it('issues the control plane serving certificate with DNS and IP SANs', async () => {
    const ca = await CertificateAuthority.create();
    const kp = await ca.issueServerCert({ dnsNames: ['weft-control.istio-system.svc'], ipAddresses: ['127.0.0.1', '::1'] });
    const leaf = new X509Certificate(kp.certChainPem);
    expect(leaf.subjectAltName).toBe('DNS:weft-control.istio-system.svc, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(leaf.checkHost('weft-control.istio-system.svc')).toBeTruthy();
    expect(await opensslVerify([kp.certChainPem, kp.rootPem])).toContain('OK');
  });
});

describe('plugged-in intermediate CA (cacerts)', () => {
  it('chains leaf → intermediate → root, verified by openssl', async () => {
    const dir = newDir();
    const { rootPem, intermediatePem } = await writePluggedCA(dir);
    const ca = await CertificateAuthority.create({ source: { type: 'plugged', dir } });
    expect(ca.rootPem.trim()).toBe(rootPem.trim());
    const { csrPem } = await createKeyAndCsr(bookinfo);
    const chain = await ca.signWorkload(csrPem, bookinfo, 600);
    expect(chain).toHaveLength(3);
    expect(chain[1]!.trim()).toBe(intermediatePem.trim());
    expect(chain[2]!.trim()).toBe(rootPem.trim());
    expect(await opensslVerify(chain)).toContain('OK');
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe('URI:spiffe://cluster.local/ns/bookinfo/sa/reviews');
    // Without the intermediate it must not verify: the leaf really is signed by the intermediate.
    await expect(opensslVerify([chain[0]!, chain[2]!])).rejects.toThrow();
  });

  it('accepts a cert-chain.pem that omits ca-cert.pem and the root', async () => {
    const dir = newDir();
    const { intermediatePem } = await writePluggedCA(dir);
    writeFileSync(join(dir, 'cert-chain.pem'), intermediatePem);
    const ca = await CertificateAuthority.create({ source: { type: 'plugged', dir } });
    const { csrPem } = await createKeyAndCsr(bookinfo);
    expect(await opensslVerify(await ca.signWorkload(csrPem, bookinfo))).toContain('OK');
  });

  it('names the file at fault when one is missing or invalid', async () => {
    for (const f of ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem']) {
      const dir = newDir();
      await writePluggedCA(dir);
      unlinkSync(join(dir, f));
      await expect(CertificateAuthority.create({ source: { type: 'plugged', dir } })).rejects.toThrow(`${join(dir, f)}: missing`);
    }
    const dir = newDir();
    await writePluggedCA(dir);
    writeFileSync(join(dir, 'root-cert.pem'), 'garbage');
    await expect(CertificateAuthority.create({ source: { type: 'plugged', dir } })).rejects.toThrow(/root-cert\.pem: invalid/);

    // A key from another CA, and a root that did not sign the intermediate.
    const other = newDir();
    await writePluggedCA(other);
    const mixed = newDir();
    await writePluggedCA(mixed);
    writeFileSync(join(mixed, 'ca-key.pem'), readFileSync(join(other, 'ca-key.pem')));
    await expect(CertificateAuthority.create({ source: { type: 'plugged', dir: mixed } })).rejects.toThrow(/ca-key\.pem: invalid: does not match/);
    const foreignRoot = newDir();
    await writePluggedCA(foreignRoot);
    writeFileSync(join(foreignRoot, 'root-cert.pem'), readFileSync(join(other, 'root-cert.pem')));
    writeFileSync(join(foreignRoot, 'cert-chain.pem'), readFileSync(join(foreignRoot, 'ca-cert.pem')));
    await expect(CertificateAuthority.create({ source: { type: 'plugged', dir: foreignRoot } })).rejects.toThrow(/cert-chain\.pem: does not chain/);
  });
});
