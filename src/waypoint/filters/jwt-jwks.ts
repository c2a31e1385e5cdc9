// Key sets for the JWT filter: inline (local_jwks) or fetched over HTTPS (remote_jwks). A remote
// set is jose's createRemoteJWKSet (cache for cache_duration, one fetch at a time, a refetch on
// an unknown `kid` once the cooldown since the last fetch has passed) over our own fetch: the
// waypoint is outside the mesh capture, so it dials an endpoint of the http_uri's cluster itself
// (from the routing table) and checks the server's certificate against the uri's host (SNI too),
// trusting the system CAs, NODE_EXTRA_CA_CERTS and the bundle the waypoint was given (--jwks-ca).
// Everything the JWKS server controls is bounded: the time a fetch may take, the response size,
// the number of keys, and how often a failing server is asked again.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, type JWTVerifyGetKey } from 'jose';

/** Response bodies over this are refused (a JWKS of many large RSA keys is far below it). */
export const MAX_JWKS_BYTES = 256 * 1024;
/** Key sets with more keys are refused: each key is imported when used. */
export const MAX_JWKS_KEYS = 64;
/** A failed fetch is not tried again for this long (Envoy's failed_refetch_duration default is 1 s). */
export const FAILED_REFETCH_MS = 1000;
/** jose's default: after a fetch, an unknown kid fetches again only after this long. */
export const DEFAULT_COOLDOWN_MS = 30_000;

/** What a remote JWKS fetch needs from the waypoint. */
export interface JwksEnv {
  /** The endpoints of a cluster in the current routing table. */
  clusterEndpoints?: (cluster: string) => readonly { address: string; port: number }[];
  /** Extra trusted CAs (PEM), besides the system's and NODE_EXTRA_CA_CERTS. */
  caPem?: string;
  /** The unknown-kid refetch cooldown (ms). */
  cooldownMs?: number;
}

export interface RemoteJwksConfig {
  uri: string;
  cluster: string;
  timeoutMs: number;
  cacheMs: number;
}

/** Checks a JWKS document's shape and size; throws saying why it is refused. */
export function checkJwks(text: string, what: string): { keys: Record<string, unknown>[] } {
  if (text.length > MAX_JWKS_BYTES) throw new Error(`${what}: JWKS larger than ${MAX_JWKS_BYTES} bytes`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error(`${what}: JWKS is not JSON`);
  }
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new Error(`${what}: JWKS has no [keys] array`);
  if (keys.length > MAX_JWKS_KEYS) throw new Error(`${what}: JWKS has more than ${MAX_JWKS_KEYS} keys`);
  return doc as { keys: Record<string, unknown>[] };
}

/** Key sets whose keys never change (inline ones): the set itself names its key material. */
const fixed = new WeakSet<JWTVerifyGetKey>();
/** Remote sets: the jose set (for its freshness) and the current key material's epoch. */
const remotes = new WeakMap<JWTVerifyGetKey, { set: ReturnType<typeof createRemoteJWKSet>; epoch: object }>();

/** Marks a key function as one fixed set of keys (what localJwks returns). */
export function fixedKeys<T extends JWTVerifyGetKey>(keys: T): T {
  fixed.add(keys);
  return keys;
}

/**
 * The key material a key set holds now, for the cache of verified tokens (jwt-cache.ts): a token
 * verified under one epoch may be taken as verified under the same epoch only. A fixed set is its
 * own epoch; a remote set gets a new one on every fetch that brings other keys. undefined (do not
 * cache, do not trust the cache) when that is not known: a remote set not fetched yet, fetching
 * now, or past its cache_duration (only a real verification makes jose fetch again, so the cache
 * must not hide a stale set), and any key function of unknown origin.
 */
export function keyEpoch(keys: JWTVerifyGetKey): object | undefined {
  if (fixed.has(keys)) return keys;
  const r = remotes.get(keys);
  return r && r.set.fresh && !r.set.reloading ? r.epoch : undefined;
}

/** An inline key set. An empty one is allowed and matches no token (a rule the control plane could not resolve). */
export function localJwks(text: string, what: string): JWTVerifyGetKey {
  return fixedKeys(createLocalJWKSet(checkJwks(text, what) as Parameters<typeof createLocalJWKSet>[0]));
}

function extraCas(env: JwksEnv): string[] {
  const out = [...tls.rootCertificates];
  const file = process.env.NODE_EXTRA_CA_CERTS;
  if (file)
    try {
      out.push(readFileSync(file, 'utf8'));
    } catch {
      // Node warned at start already; the system CAs stay.
    }
  if (env.caPem) out.push(env.caPem);
  return out;
}

/** GET over TLS to one endpoint of the cluster, the certificate checked against the uri's host. */
function fetchVia(cfg: RemoteJwksConfig, env: JwksEnv, ca: string[]): (url: string, o: { signal: AbortSignal; headers: Headers }) => Promise<Response> {
  let next = 0;
  return (url, o) =>
    new Promise<Response>((resolve, reject) => {
      const u = new URL(url);
      const eps = env.clusterEndpoints?.(cfg.cluster) ?? [];
      // A cluster without EDS endpoints (a DNS ServiceEntry: an external issuer's JWKS) is reached
      // by the uri's own host name; the certificate is checked against it either way.
      const ep = eps.length ? eps[next++ % eps.length]! : { address: u.hostname, port: Number(u.port || 443) };
      const req = https.request({
        host: ep.address, port: ep.port, servername: u.hostname, ca, method: 'GET', path: `${u.pathname}${u.search}`,
        headers: { host: u.host, accept: o.headers.get('accept') ?? 'application/json' }, agent: false, signal: o.signal,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_JWKS_BYTES) {
            res.destroy();
            req.destroy();
            reject(new Error(`JWKS response larger than ${MAX_JWKS_BYTES} bytes`));
          } else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          if (size > MAX_JWKS_BYTES) return;
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode === 200) {
            try {
              checkJwks(text, cfg.uri);
            } catch (e) {
              return reject(e as Error);
            }
          }
          resolve(new Response(text, { status: res.statusCode ?? 500 }));
        });
      });
      req.on('error', reject);
      req.end();
    });
}

/**
 * A remote key set. Failures are remembered for FAILED_REFETCH_MS so a failing or hostile server
 * is asked at most once a second, whatever the request rate (jose asks again on every miss).
 */
export function remoteJwks(cfg: RemoteJwksConfig, env: JwksEnv): JWTVerifyGetKey {
  const fetchOne = fetchVia(cfg, env, extraCas(env));
  let failedAt = -Infinity;
  let lastError: Error | undefined;
  let lastDoc: string | undefined;
  const guarded = async (url: string, o: { signal: AbortSignal; headers: Headers }) => {
    if (Date.now() - failedAt < FAILED_REFETCH_MS) throw lastError ?? new Error('JWKS fetch failed');
    let res: Response;
    try {
      res = await fetchOne(url, o);
    } catch (e) {
      failedAt = Date.now();
      lastError = e as Error;
      throw e;
    }
    if (res.status === 200) {
      // Other keys, another epoch: tokens verified with a removed or replaced key are verified
      // again. keyEpoch answers undefined until jose has installed the new set (reloading).
      const text = await res.text();
      const doc = createHash('sha256').update(text).digest('base64');
      if (doc !== lastDoc) {
        lastDoc = doc;
        state.epoch = {};
      }
      return new Response(text, { status: 200 });
    }
    return res;
  };
  const set = createRemoteJWKSet(new URL(cfg.uri), {
    timeoutDuration: cfg.timeoutMs,
    cacheMaxAge: cfg.cacheMs,
    cooldownDuration: env.cooldownMs ?? DEFAULT_COOLDOWN_MS,
    [customFetch]: guarded as never,
  });
  const state = { set, epoch: {} };
  remotes.set(set, state);
  return set;
}

/** Remote sets shared by every compiled filter of one waypoint, so a new Listener version does not refetch. */
export class JwksCache {
  private sets = new Map<string, JWTVerifyGetKey>();
  constructor(private readonly env: JwksEnv) {}

  get(cfg: RemoteJwksConfig): JWTVerifyGetKey {
    const key = JSON.stringify([cfg.uri, cfg.cluster, cfg.timeoutMs, cfg.cacheMs]);
    let s = this.sets.get(key);
    if (!s) {
      // Bounded: an old entry goes when many distinct configurations came and went.
      if (this.sets.size >= 256) this.sets.delete(this.sets.keys().next().value!);
      this.sets.set(key, (s = remoteJwks(cfg, this.env)));
    }
    return s;
  }
}
