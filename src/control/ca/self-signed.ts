// The default mesh CA: a self-signed ECDSA P-256 root, long-lived, generated once and kept where
// every later start (and every replica) finds it again: a directory (the lab, `--config-dir`) or,
// on Kubernetes, the Secret istio-ca-secret (root-secret.ts). Both use Istio's key names,
// ca-cert.pem and ca-key.pem.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CAMaterial } from './material.ts';
import { importSigningKey } from './signing-key.ts';
import { P256, generateP256, privateKeyPem, x509 } from './x509.ts';

export const CERT_FILE = 'ca-cert.pem';
export const KEY_FILE = 'ca-key.pem';
const ROOT_VALIDITY_DAYS = 3650;

export interface RootPair {
  certPem: string;
  keyPem: string;
}

/** Where the root is kept. Errors name the store's location of a key, so an operator can fix it. */
export interface RootStore {
  /** The kept root, or undefined if there is none yet; throws if only half of it is there. */
  load(): Promise<RootPair | undefined>;
  /** Keeps `pair` unless another writer got there first; returns the root that is kept. */
  create(pair: RootPair): Promise<RootPair>;
  /** How errors name one key of the root ("dir/ca-key.pem", "Secret ns/name key ca-key.pem"). */
  where(key: typeof CERT_FILE | typeof KEY_FILE): string;
}

async function generateRoot(trustDomain: string): Promise<RootPair> {
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

/** The root in a directory (one process owns it). */
export function dirRootStore(dir: string): RootStore {
  const certPath = join(dir, CERT_FILE);
  const keyPath = join(dir, KEY_FILE);
  return {
    async load() {
      const has = [existsSync(certPath), existsSync(keyPath)];
      if (!has[0] && !has[1]) return undefined;
      if (!has[0] || !has[1]) throw new Error(`self-signed CA: ${has[0] ? keyPath : certPath} is missing (${dir} has only half of the root)`);
      return { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
    },
    async create(pair) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(keyPath, pair.keyPem, { mode: 0o600 });
      writeFileSync(certPath, pair.certPem);
      return pair;
    },
    where: (key) => join(dir, key),
  };
}

/** The kept root, or a new one kept for next time; without a store, a new root in memory only. */
export async function selfSignedCA(trustDomain: string, store?: RootStore): Promise<CAMaterial> {
  let pair = await store?.load();
  if (!pair) {
    pair = await generateRoot(trustDomain);
    if (store) pair = await store.create(pair);
  }
  const where = (f: typeof CERT_FILE | typeof KEY_FILE) => (store ? store.where(f) : f);
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
