import { createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IMPERSONATED_IDENTITY as AGENT_KEY } from '../../src/identity/ca-client.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { formatSpiffe } from '../../src/api/spiffe.ts';
import { IMPERSONATED_IDENTITY as CA_KEY } from '../../src/api/ca.ts';
import { x509 } from '../../src/control/ca/x509.ts';

describe('createKeyAndCsr', () => {
  // Short and long identities: DER lengths in one byte, and in two and three.
  for (const sa of ['reviews', 'a'.repeat(200), 'b'.repeat(300)]) {
    it(`writes a PKCS#10 request the CA parses and verifies (service account of ${sa.length} characters)`, async () => {
      const id = { trustDomain: 'cluster.local', namespace: 'bookinfo', serviceAccount: sa };
      const k = await createKeyAndCsr(id);
      const csr = new x509.Pkcs10CertificateRequest(k.csrPem); // what the CA does with it
      expect(await csr.verify()).toBe(true);
      expect(csr.subject).toBe('');
      expect(csr.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
      const san = csr.extensions.find((e) => e.type === '2.5.29.17')!;
      expect(san.critical).toBe(true);
      expect(new x509.SubjectAlternativeNameExtension(san.rawData).names.items.map((n) => [n.type, n.value])).toEqual([['url', formatSpiffe(id)]]);
      // The CSR carries the returned public key, which belongs to the returned private key.
      expect(Buffer.from(csr.publicKey.rawData).equals(k.publicKey.export({ type: 'spki', format: 'der' }))).toBe(true);
      const priv = createPrivateKey(k.keyPem);
      expect(priv.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    });
  }

  it('makes a new key every time', async () => {
    const id = { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'sa' };
    const [a, b] = [await createKeyAndCsr(id), await createKeyAndCsr(id)];
    expect(a.keyPem).not.toBe(b.keyPem);
  });

  it("names the impersonated identity as the CA reads it", () => {
    expect(AGENT_KEY).toBe(CA_KEY);
  });
});
