// Fail closed on whatever the CA sends back: it must be for our key, our identity, and chain to
// the mesh root we were configured with.
import type { KeyObject, X509Certificate } from 'node:crypto';
import { formatSpiffe, spiffeFromSubjectAltName, type SpiffeId } from '../api/spiffe.ts';
import { chainRoot, parseCerts, withoutRoots } from '../pki/pem.ts';

/** Tolerated clock skew for notBefore only; an expired certificate is never accepted. */
const SKEW_MS = 60_000;

export interface VerifiedChain {
  /** Leaf then intermediates, without the root. */
  certChainPem: string;
  rootPem: string;
  notBefore: Date;
  notAfter: Date;
}

export function verifyIssued(
  chainPems: string[],
  want: SpiffeId,
  publicKey: KeyObject,
  roots: X509Certificate[],
  now = new Date(),
): VerifiedChain {
  const fail = (why: string): never => {
    throw new Error(`CA response for ${formatSpiffe(want)} rejected: ${why}`);
  };
  let chain: X509Certificate[] = [];
  try {
    chain = parseCerts(chainPems.join('\n'));
  } catch (e) {
    fail(`unparseable chain: ${(e as Error).message}`);
  }
  const leaf = chain[0]!;
  const sans = spiffeFromSubjectAltName(leaf.subjectAltName);
  if (sans.length !== 1 || sans[0] !== formatSpiffe(want)) fail(`leaf SAN is ${sans.join(', ') || 'absent'}`);
  if (leaf.ca) fail('leaf is a CA certificate');
  const ours = publicKey.export({ type: 'spki', format: 'der' });
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ours)) fail('leaf is not for our key');
  const root = chainRoot(chain, roots);
  if (!root) fail('chain does not verify to the mesh root');
  for (const c of [...chain, root!]) {
    if (new Date(c.validTo) <= now) fail(`certificate ${c.subject || c.serialNumber} expired at ${c.validTo}`);
    if (new Date(c.validFrom).getTime() > now.getTime() + SKEW_MS) fail(`certificate not valid before ${c.validFrom}`);
  }
  return {
    certChainPem: withoutRoots(chain, roots)
      .map((c) => c.toString().trim())
      .join('\n') + '\n',
    rootPem: root!.toString(),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  };
}
