// A fresh ECDSA P-256 key and a CSR for one workload identity; a new key for every certificate.
//
// The CSR is a fixed PKCS#10 shape (empty subject, the key, one extensionRequest with a critical
// URI SAN, ECDSA with SHA-256), written in DER here with node:crypto doing the key and the
// signature. @peculiar/x509 made the same request, but with its ASN.1 schemas, tsyringe and
// Reflect metadata it was the largest package the agent loaded (~3.3 MB of V8 heap, resident for
// the agent's lifetime, for one request a day per identity); the control plane still parses and
// verifies every request with it.
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { formatSpiffe, type SpiffeId } from '../api/spiffe.ts';

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
  publicKey: KeyObject;
}

export async function createKeyAndCsr(id: SpiffeId): Promise<KeyAndCsr> {
  // Synchronous: a P-256 key takes well under a millisecond, and the async form would wake
  // libuv's thread pool (a thread and a malloc arena each) for nothing else.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // The SAN is informational (as ztunnel sends it); the CA decides the identity itself.
  const info = pkcs10Info(spki, formatSpiffe(id));
  const signature = sign('sha256', info, privateKey); // DER ECDSA-Sig-Value, as X.509 wants it
  const der = seq(info, seq(oid(ECDSA_WITH_SHA256)), bitString(signature));
  return {
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    csrPem: pem('CERTIFICATE REQUEST', der),
    publicKey: createPublicKey({ key: spki, format: 'der', type: 'spki' }),
  };
}

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const EXTENSION_REQUEST = '1.2.840.113549.1.9.14';
const SUBJECT_ALT_NAME = '2.5.29.17';

/** CertificationRequestInfo: version 0, empty subject, the key, a critical URI SAN requested. */
export function pkcs10Info(spki: Buffer, uri: string): Buffer {
  const san = tlv(0x04, seq(tlv(0x86, Buffer.from(uri, 'ascii')))); // OCTET STRING { GeneralNames { [6] uri } }
  const extensions = seq(seq(oid(SUBJECT_ALT_NAME), tlv(0x01, Buffer.from([0xff])), san));
  const attributes = tlv(0xa0, seq(oid(EXTENSION_REQUEST), tlv(0x31, extensions))); // [0] { extensionRequest SET { Extensions } }
  return seq(tlv(0x02, Buffer.from([0])), seq(), spki, attributes);
}

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}

const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const bitString = (b: Buffer) => tlv(0x03, Buffer.concat([Buffer.from([0]), b]));

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number);
  const out = [a! * 40 + b!];
  for (const v of rest) {
    const bytes = [v & 0x7f];
    for (let x = v >>> 7; x > 0; x >>>= 7) bytes.unshift((x & 0x7f) | 0x80);
    out.push(...bytes);
  }
  return tlv(0x06, Buffer.from(out));
}

function pem(label: string, der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}
