// Verified tokens per provider, as Envoy's JwtCache (jwt_authn's jwt_cache_config): a token whose
// signature verified is not verified again (ES256 is most of a JWT request's CPU). Only the
// signature is stood in for: the issuer, the time window and the audiences are still checked on
// every request, before the cache is asked. An entry is the sha256 of the exact token (a bounded
// key, whatever the token's size), the key material it verified with (jwt-jwks.ts keyEpoch: a new
// inline set, or a remote set refetched with other keys, misses) and the end of its time window.
// Only successes go in, so a failure is evaluated again and bad tokens cannot fill the cache.
import { createHash } from 'node:crypto';

/** Envoy's default jwt_cache_size. */
export const DEFAULT_JWT_CACHE_SIZE = 100;
/** A larger jwt_cache_size is taken as this: a flood of distinct valid tokens must stay cheap in memory. */
export const MAX_JWT_CACHE_SIZE = 10_000;
/** Envoy does not cache longer tokens (kMaxJwtSizeForCache). */
export const MAX_CACHED_TOKEN = 4 * 1024;

interface Entry {
  epoch: object;
  /** The last second (exp plus the clock skew) at which the token is valid; Infinity without exp. */
  untilS: number;
}

// utf16le hashes every UTF-16 unit as it is: distinct strings, distinct input (utf8 would map lone surrogates alike).
const digest = (token: string) => createHash('sha256').update(token, 'utf16le').digest('base64');

export class JwtCache {
  // A Map iterates in insertion order: re-inserting on a hit makes the first entry the least recently used.
  private readonly entries = new Map<string, Entry>();
  readonly capacity: number;

  constructor(capacity = DEFAULT_JWT_CACHE_SIZE) {
    this.capacity = Math.min(Math.max(1, Math.floor(capacity) || DEFAULT_JWT_CACHE_SIZE), MAX_JWT_CACHE_SIZE);
  }

  get size(): number {
    return this.entries.size;
  }

  /** Whether the token verified with the key material of `epoch` and its window has not ended at `nowS`. */
  has(token: string, epoch: object | undefined, nowS: number): boolean {
    if (!epoch || token.length > MAX_CACHED_TOKEN) return false;
    const key = digest(token);
    const e = this.entries.get(key);
    if (!e) return false;
    this.entries.delete(key);
    if (e.epoch !== epoch || nowS > e.untilS) return false; // stale: dropped
    this.entries.set(key, e);
    return true;
  }

  /** Records a token whose signature verified with the key material of `epoch`. */
  add(token: string, epoch: object, untilS: number): void {
    if (token.length > MAX_CACHED_TOKEN) return;
    const key = digest(token);
    this.entries.delete(key);
    this.entries.set(key, { epoch, untilS });
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }
}
