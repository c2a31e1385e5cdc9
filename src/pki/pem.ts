// PEM bundles and chain links, with node:crypto doing the X.509 work.
import { X509Certificate } from 'node:crypto';

const CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Each certificate of a PEM bundle, in order, as its own PEM string. */
export function splitCerts(bundle: string): string[] {
  return (bundle.match(CERT) ?? []).map((c) => `${c}\n`);
}

/** Parses every certificate of a bundle; throws if there is none or one is malformed. */
export function parseCerts(bundle: string): X509Certificate[] {
  const pems = splitCerts(bundle);
  if (pems.length === 0) throw new Error('no PEM certificate found');
  return pems.map((p) => new X509Certificate(p));
}

/** True when parent's subject matches child's issuer and parent's key signed child. */
export function issuedBy(child: X509Certificate, parent: X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

/**
 * The root of `roots` that `chain` (leaf first, each issued by the next) ends at, if any.
 * Every certificate that issues another must be a CA.
 */
export function chainRoot(chain: X509Certificate[], roots: X509Certificate[]): X509Certificate | undefined {
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!chain[i + 1]!.ca || !issuedBy(chain[i]!, chain[i + 1]!)) return undefined;
  }
  const last = chain[chain.length - 1];
  if (!last) return undefined;
  return roots.find((r) => r.raw.equals(last.raw)) ?? roots.find((r) => r.ca && issuedBy(last, r));
}

/** Drops certificates that are themselves one of the roots (the chain sent to peers omits the root). */
export function withoutRoots(chain: X509Certificate[], roots: X509Certificate[]): X509Certificate[] {
  return chain.filter((c) => !roots.some((r) => r.raw.equals(c.raw)));
}
