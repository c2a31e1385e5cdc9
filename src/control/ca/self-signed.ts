// The default mesh CA: a self-signed ECDSA P-256 root, long-lived, generated once and kept in
// `dir` (Istio's istio-ca-secret names: ca-cert.pem, ca-key.pem) so restarts keep the trust root.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CAMaterial } from './material.ts';
import { importSigningKey } from './signing-key.ts';
import { P256, generateP256, privateKeyPem, x509 } from './x509.ts';

const CERT_FILE = 'ca-cert.pem';
const KEY_FILE = 'ca-key.pem';
const ROOT_VALIDITY_DAYS = 3650;

async function generateRoot(trustDomain: string): Promise<{ certPem: string; keyPem: string }> {
  const keys = await generateP256();
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: [{ O: [trustDomain] }],
    keys,
    signingAlgorithm: P256,
    notBefore: now,
    notAfter: new Date(now.getTime() + ROOT_VALIDITY_DAYS * 86_400_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

function readPair(dir: string): { certPem: string; keyPem: string } | undefined {
  const certPath = join(dir, CERT_FILE);
  const keyPath = join(dir, KEY_FILE);
  const has = [existsSync(certPath), existsSync(keyPath)];
  if (!has[0] && !has[1]) return undefined;
  if (!has[0] || !has[1]) throw new Error(`self-signed CA: ${has[0] ? keyPath : certPath} is missing (${dir} has only half of the root)`);
  return { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
}

export async function selfSignedCA(trustDomain: string, dir?: string): Promise<CAMaterial> {
  let pair = dir ? readPair(dir) : undefined;
  if (!pair) {
    pair = await generateRoot(trustDomain);
    if (dir) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, KEY_FILE), pair.keyPem, { mode: 0o600 });
      writeFileSync(join(dir, CERT_FILE), pair.certPem);
    }
  }
  const where = (f: string) => (dir ? join(dir, f) : f);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pair.certPem);
  } catch (e) {
    throw new Error(`self-signed CA: ${where(CERT_FILE)} is not a valid certificate: ${(e as Error).message}`, { cause: e });
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(pair.keyPem))) throw new Error('it does not match the certificate');
    const signer = await importSigningKey(pair.keyPem);
    return { cert, signer, intermediatePems: [], rootPem: cert.toString() };
  } catch (e) {
    throw new Error(`self-signed CA: ${where(KEY_FILE)} is not usable: ${(e as Error).message}`, { cause: e });
  }
}
