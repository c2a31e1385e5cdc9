// A throwaway mesh CA for HBONE tests: ECDSA P-256 root, leaves carrying one SPIFFE URI SAN.
import type { Credentials } from '../../src/hbone/settings.ts';
import { P256 as EC, generateP256, privateKeyPem, x509 } from '../../src/control/ca/x509.ts';

const DAY = 86_400_000;

export interface TestCa {
  root: string;
  /** Credentials for `spiffe://<trustDomain>/ns/<ns>/sa/<sa>` signed by this CA. */
  issue(ns: string, sa: string, trustDomain?: string): Promise<Credentials>;
}

export async function createCa(name = 'weft test root'): Promise<TestCa> {
  const keys = await generateP256();
  const rootCert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + DAY),
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const root = rootCert.toString('pem');
  return {
    root,
    async issue(ns, sa, trustDomain = 'cluster.local') {
      const leafKeys = await generateP256();
      const leaf = await x509.X509CertificateGenerator.create({
        subject: `O=${trustDomain}`,
        issuer: rootCert.subject,
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + DAY),
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: EC,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}/ns/${ns}/sa/${sa}` }], true),
          await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      return { key: await privateKeyPem(leafKeys.privateKey), certChain: leaf.toString('pem'), root };
    },
  };
}
