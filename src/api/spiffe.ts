// SPIFFE identities as Istio uses them: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.

export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export function formatSpiffe(id: SpiffeId): string {
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

const SPIFFE = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/;

/** Parses an Istio SPIFFE URI; undefined for anything else (fail closed at call sites). */
export function parseSpiffe(uri: string): SpiffeId | undefined {
  const m = SPIFFE.exec(uri);
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! } : undefined;
}

/** The SPIFFE URI SANs of a certificate's subjectAltName string (node:crypto X509Certificate format). */
export function spiffeFromSubjectAltName(san: string | undefined): string[] {
  if (!san) return [];
  return san
    .split(/,\s*/)
    .filter((e) => e.startsWith('URI:spiffe://'))
    .map((e) => e.slice(4));
}
