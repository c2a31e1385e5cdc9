// What a CA signs with, whichever way it was set up.
import type { X509Certificate } from 'node:crypto';
import type { SigningKey } from './signing-key.ts';

export interface CAMaterial {
  /** The issuing certificate (the root itself when self-signed). */
  cert: X509Certificate;
  signer: SigningKey;
  /** PEMs between a leaf and the root: the issuing cert first; empty when self-signed. */
  intermediatePems: string[];
  /** The root the chain ends at. */
  rootPem: string;
}
