// Peer identities on HBONE connections are SPIFFE URI SANs, never hostnames. (Moved from
// src/hbone/identity.ts: only Node's transport checks certificates in JavaScript; the relay does it in C++.)
import type { PeerCertificate } from 'node:tls';
import { parseSpiffe, spiffeFromSubjectAltName, type SpiffeId } from '../../api/spiffe.ts';

/** The single Istio SPIFFE identity of a certificate; undefined when it has none or several. */
export function certificateIdentity(cert: PeerCertificate | undefined): SpiffeId | undefined {
  const uris = spiffeFromSubjectAltName(cert?.subjectaltname);
  return uris.length === 1 ? parseSpiffe(uris[0]!) : undefined;
}

/** A tls `checkServerIdentity` that accepts only a leaf whose SPIFFE URI SAN is `expected`. */
export function expectSpiffe(expected: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const uris = spiffeFromSubjectAltName(cert.subjectaltname);
    if (uris.includes(expected)) return undefined;
    return Object.assign(new Error(`server identity [${uris.join(', ')}] is not ${expected}`), { code: 'ERR_HBONE_IDENTITY' });
  };
}
