// A fresh ECDSA P-256 key and a CSR for one workload identity; a new key for every certificate.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { formatSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import { P256, generateP256, privateKeyPem, x509 } from '../../control/ca/x509.ts';

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
  publicKey: KeyObject;
}

export async function createKeyAndCsr(id: SpiffeId): Promise<KeyAndCsr> {
  const keys = await generateP256();
  // The SAN is informational (as ztunnel sends it); the CA decides the identity itself.
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: P256,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: formatSpiffe(id) }], true)],
  });
  return {
    keyPem: await privateKeyPem(keys.privateKey),
    csrPem: csr.toString('pem'),
    publicKey: createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' }),
  };
}
