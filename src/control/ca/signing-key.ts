// A CA signing key from PEM. Plugged-in CAs (Istio's cacerts) may bring EC or RSA keys in any
// PEM flavour; node:crypto parses them all, webcrypto signs with them.
import { createPrivateKey, webcrypto } from 'node:crypto';

export interface SigningKey {
  key: CryptoKey;
  /** Signature algorithm for @peculiar/x509, matching the key. */
  algorithm: EcdsaParams | Algorithm;
}

const CURVES: Record<string, { curve: string; hash: string }> = {
  prime256v1: { curve: 'P-256', hash: 'SHA-256' },
  secp384r1: { curve: 'P-384', hash: 'SHA-384' },
  secp521r1: { curve: 'P-521', hash: 'SHA-512' },
};

/** Throws with a plain reason; callers add which file it came from. */
export async function importSigningKey(pem: string): Promise<SigningKey> {
  const ko = createPrivateKey(pem);
  const pkcs8 = ko.export({ format: 'der', type: 'pkcs8' });
  if (ko.asymmetricKeyType === 'ec') {
    const c = CURVES[ko.asymmetricKeyDetails?.namedCurve ?? ''];
    if (!c) throw new Error(`unsupported EC curve ${ko.asymmetricKeyDetails?.namedCurve}`);
    const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: c.curve }, false, ['sign']);
    return { key, algorithm: { name: 'ECDSA', hash: c.hash } as EcdsaParams };
  }
  if (ko.asymmetricKeyType === 'rsa') {
    const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    const key = await webcrypto.subtle.importKey('pkcs8', pkcs8, alg, false, ['sign']);
    return { key, algorithm: alg };
  }
  throw new Error(`unsupported key type ${ko.asymmetricKeyType}`);
}
