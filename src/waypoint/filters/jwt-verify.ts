// One JWT against one provider, in Envoy's order (jwt_authn's authenticator over jwt_verify_lib):
// the form and its parts, the issuer, the time window (exp, nbf with the clock skew), the
// audiences, then the signature with the provider's key set (jose's compactVerify: the key
// selected by kid and alg; `none` and keys of another type never verify). Each failure is Envoy's
// status, whose text is the 401's body. A signature that verified before with the same keys is
// taken from the provider's cache (jwt-cache.ts); every other check runs on every request.
import { compactVerify, errors, type JWTVerifyGetKey } from 'jose';
import type { JwtCache } from './jwt-cache.ts';
import { keyEpoch } from './jwt-jwks.ts';

/** jwt_verify_lib's status texts (getStatusString), the ones this filter produces. */
export const STATUS = {
  missing: 'Jwt is missing',
  notYetValid: 'Jwt not yet valid',
  expired: 'Jwt is expired',
  badFormat: 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
  headerParse: 'Jwt header is an invalid Base64url encoded',
  headerJson: 'Jwt header is an invalid JSON',
  badAlg: 'Jwt header [alg] field is required and must be a string',
  badKid: 'Jwt header [kid] field is not a string',
  payloadParse: 'Jwt payload is an invalid Base64url encoded',
  payloadJson: 'Jwt payload is an invalid JSON',
  unknownIssuer: 'Jwt issuer is not configured',
  audienceNotAllowed: 'Audiences in Jwt are not allowed',
  verificationFail: 'Jwt verification fails',
  kidAlgMismatch: "Jwks doesn't have key to match kid or alg from Jwt",
  fetchFail: 'Jwks remote fetch is failed',
} as const;

export type Status = (typeof STATUS)[keyof typeof STATUS] | 'OK';

/** A token longer than Envoy's default request header limit (60 KiB) cannot reach Envoy; refused unparsed. */
export const MAX_TOKEN = 60 * 1024;

export interface ParsedJwt {
  token: string;
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  /** The payload part as sent (base64url), what forward_payload_header carries. */
  payloadB64: string;
  iss?: string;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

function part(s: string): Record<string, unknown> | 'b64' | 'json' {
  if (!B64URL.test(s)) return 'b64';
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  } catch {
    return 'json';
  }
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : 'json';
}

/** Parses a token's header and payload (no signature check); a status when it is not a JWT. */
export function parseJwt(token: string): ParsedJwt | Status {
  if (token.length > MAX_TOKEN) return STATUS.badFormat;
  const parts = token.split('.');
  if (parts.length !== 3) return STATUS.badFormat;
  const header = part(parts[0]!);
  if (header === 'b64') return STATUS.headerParse;
  if (header === 'json') return STATUS.headerJson;
  if (typeof header.alg !== 'string') return STATUS.badAlg;
  if (header.kid !== undefined && typeof header.kid !== 'string') return STATUS.badKid;
  const payload = part(parts[1]!);
  if (payload === 'b64') return STATUS.payloadParse;
  if (payload === 'json') return STATUS.payloadJson;
  if (payload.iss !== undefined && typeof payload.iss !== 'string') return STATUS.payloadJson;
  return { token, header, payload, payloadB64: parts[1]!, ...(typeof payload.iss === 'string' && { iss: payload.iss }) };
}

/** jwt_verify_lib's audience comparison: the scheme (http, https) and a trailing slash do not count. */
const normAud = (a: string) => a.replace(/^https?:\/\//, '').replace(/\/$/, '');

export function audiencesOf(payload: Record<string, unknown>): string[] {
  const aud = payload.aud;
  if (typeof aud === 'string') return [aud];
  return Array.isArray(aud) ? aud.filter((a): a is string => typeof a === 'string') : [];
}

export interface VerifyOptions {
  issuer: string;
  audiences: readonly string[];
  clockSkewS: number;
  keys: JWTVerifyGetKey;
  /** The provider's verified tokens (none: every token is verified). */
  cache?: JwtCache;
}

/** Verifies a parsed token for one provider. */
export async function verifyJwt(jwt: ParsedJwt, o: VerifyOptions, nowMs = Date.now()): Promise<Status> {
  if (o.issuer && jwt.iss !== undefined && jwt.iss !== o.issuer) return STATUS.unknownIssuer;
  const now = Math.floor(nowMs / 1000);
  const exp = jwt.payload.exp;
  const nbf = jwt.payload.nbf;
  if (exp !== undefined && typeof exp !== 'number') return STATUS.payloadJson;
  if (nbf !== undefined && typeof nbf !== 'number') return STATUS.payloadJson;
  if (typeof nbf === 'number' && nbf > now + o.clockSkewS) return STATUS.notYetValid;
  if (typeof exp === 'number' && exp > 0 && now > exp + o.clockSkewS) return STATUS.expired;
  if (o.audiences.length) {
    const want = new Set(o.audiences.map(normAud));
    if (!audiencesOf(jwt.payload).some((a) => want.has(normAud(a)))) return STATUS.audienceNotAllowed;
  }
  const epoch = o.cache && keyEpoch(o.keys);
  if (o.cache?.has(jwt.token, epoch, now)) return 'OK';
  try {
    await compactVerify(jwt.token, o.keys);
    // Cached only when the keys did not change while it verified (a fetch may land meanwhile).
    if (o.cache && epoch && keyEpoch(o.keys) === epoch) o.cache.add(jwt.token, epoch, typeof exp === 'number' && exp > 0 ? exp + o.clockSkewS : Infinity);
    return 'OK';
  } catch (e) {
    if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) return STATUS.kidAlgMismatch;
    if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) return STATUS.fetchFail;
    if (e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWSInvalid || e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) return STATUS.verificationFail;
    // Anything else is the fetch failing (network, TLS, status, size): Envoy's fetch failure.
    return e instanceof errors.JOSEError && !(e.code === 'ERR_JOSE_GENERIC') ? STATUS.verificationFail : STATUS.fetchFail;
  }
}
