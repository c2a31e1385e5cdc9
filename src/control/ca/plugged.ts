// A plugged-in intermediate CA, from a directory laid out as Istio's `cacerts` secret.
import { createPrivateKey, type X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CAMaterial } from './material.ts';
import { chainRoot, parseCerts, withoutRoots } from '../../pki/pem.ts';
import { importSigningKey } from './signing-key.ts';

export const CACERTS_FILES = ['ca-cert.pem', 'ca-key.pem', 'root-cert.pem', 'cert-chain.pem'] as const;
type CacertsFile = (typeof CACERTS_FILES)[number];

/** Every problem names the file at fault, so an operator knows which secret key to fix. */
export async function pluggedCA(dir: string): Promise<CAMaterial> {
  const path = (f: CacertsFile) => join(dir, f);
  const fail = (f: CacertsFile, why: string): never => {
    throw new Error(`plugged CA: ${path(f)}: ${why}`);
  };
  const text = {} as Record<CacertsFile, string>;
  for (const f of CACERTS_FILES) {
    try {
      text[f] = readFileSync(path(f), 'utf8');
    } catch (e) {
      fail(f, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (e as Error).message);
    }
  }
  const certs = (f: CacertsFile): X509Certificate[] => {
    try {
      return parseCerts(text[f]);
    } catch (e) {
      return fail(f, `invalid: ${(e as Error).message}`);
    }
  };

  const cert = certs('ca-cert.pem')[0]!;
  if (!cert.ca) fail('ca-cert.pem', 'not a CA certificate (basicConstraints CA:false)');
  if (new Date(cert.validTo) <= new Date()) fail('ca-cert.pem', `expired at ${cert.validTo}`);
  let signer;
  try {
    if (!cert.checkPrivateKey(createPrivateKey(text['ca-key.pem']))) throw new Error('does not match ca-cert.pem');
    signer = await importSigningKey(text['ca-key.pem']);
  } catch (e) {
    return fail('ca-key.pem', `invalid: ${(e as Error).message}`);
  }
  const roots = certs('root-cert.pem');
  // Istio's cert-chain.pem is usually ca-cert.pem followed by its issuers (often the root too).
  let chain = certs('cert-chain.pem');
  if (!chain[0]!.raw.equals(cert.raw)) chain = [cert, ...chain];
  const root = chainRoot(chain, roots);
  if (!root) fail('cert-chain.pem', 'does not chain ca-cert.pem up to a certificate in root-cert.pem');
  return {
    cert,
    signer,
    intermediatePems: withoutRoots(chain, roots).map((c) => c.toString()),
    rootPem: root!.toString(),
  };
}
