// Node credentials on Kubernetes: the agent presents its ServiceAccount token (projected, bound
// to its pod and node, with our audience); the API server's TokenReview says whose it is. Only
// the agent's own ServiceAccount counts, and the node comes from the token's binding, so an agent
// can never claim another node.
//
// Reviews are API calls, and anyone who reaches 15012 can make us ask for one. So answers are
// cached by the token's hash in two bounded maps: positives for cacheMs (never past the token's
// own expiry), negatives briefly, so one bad token repeated costs one review per negativeCacheMs;
// neither map grows past its bound (oldest entries go first), and a flood of bad tokens cannot
// push out good ones. Concurrent checks of one token share one review, and at most maxInFlight
// reviews run at once: beyond that a check fails (the caller sees UNAVAILABLE and retries) rather
// than queueing without bound. API errors are never cached.
import { createHash } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { requestJson } from '../config/kube-api.ts';
import type { NodeAuthenticator } from './authenticator.ts';

export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

export interface TokenReviewOptions {
  /** "namespace/name" of the ServiceAccounts agents run as. */
  agentServiceAccounts: string[];
  /** Audiences the token must carry (the agent's projected token asks for these). */
  audiences: string[];
  /** How long a positive answer is reused (default 30 s); tokens are hours-lived, reviews are API calls. */
  cacheMs?: number;
  /** How long a refusal is reused (default 5 s): short, so a token that becomes valid is not refused long. */
  negativeCacheMs?: number;
  /** Most answers kept of each kind (default 10,000). */
  maxEntries?: number;
  /** Most reviews in flight at once (default 32). */
  maxInFlight?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

/** A map whose entries expire and whose size is bounded; insertion order is (nearly) expiry order. */
class BoundedCache<V> {
  private readonly map = new Map<string, { value: V; until: number }>();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.map.size;
  }

  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.until > now) return e.value;
    this.map.delete(key);
    return undefined;
  }

  set(key: string, value: V, until: number, now: number): void {
    this.map.delete(key); // re-inserted at the end: the newest
    // Expired entries at the front first (cheap: they are the oldest), then the oldest live ones.
    for (const [k, e] of this.map) {
      if (e.until > now && this.map.size < this.max) break;
      this.map.delete(k);
    }
    this.map.set(key, { value, until });
  }
}

/** The `exp` of a JWT, unverified (only ever used to cache for less time), or undefined. */
function expiryMs(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const exp = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown }).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

export class TokenReviewAuthenticator implements NodeAuthenticator {
  private readonly positive: BoundedCache<string>;
  private readonly negative: BoundedCache<true>;
  private readonly pending = new Map<string, Promise<string | undefined>>();
  /** Reviews sent to the API server, for tests and metrics. */
  reviews = 0;

  constructor(
    private readonly kc: KubeConfig,
    private readonly o: TokenReviewOptions,
  ) {
    this.positive = new BoundedCache(o.maxEntries ?? 10_000);
    this.negative = new BoundedCache(o.maxEntries ?? 10_000);
  }

  /** Answers held: valid tokens, refused tokens. */
  get cached(): { positive: number; negative: number } {
    return { positive: this.positive.size, negative: this.negative.size };
  }

  async authenticate(token: string): Promise<string | undefined> {
    if (!token) return undefined;
    const key = createHash('sha256').update(token).digest('hex');
    const now = Date.now();
    const node = this.positive.get(key, now);
    if (node !== undefined) return node;
    if (this.negative.get(key, now)) return undefined;
    const shared = this.pending.get(key);
    if (shared) return shared;
    if (this.pending.size >= (this.o.maxInFlight ?? 32)) throw new Error('token reviews: too many in flight; try again');
    const p = this.review(token, key).finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async review(token: string, key: string): Promise<string | undefined> {
    this.reviews++;
    const review = (await requestJson(this.kc, 'POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: this.o.audiences },
    })) as { status?: TokenReviewStatus };
    const node = this.nodeOf(review.status ?? {});
    const now = Date.now();
    if (node === undefined) {
      this.negative.set(key, true, now + (this.o.negativeCacheMs ?? 5_000), now);
      return undefined;
    }
    const until = Math.min(now + (this.o.cacheMs ?? 30_000), expiryMs(token) ?? Infinity);
    if (until > now) this.positive.set(key, node, until, now);
    return node;
  }

  /** The node an accepted token is bound to, or undefined if it is not an agent's node credential. */
  private nodeOf(st: TokenReviewStatus): string | undefined {
    if (!st.authenticated) return undefined;
    if (this.o.audiences.length && !this.o.audiences.some((a) => st.audiences?.includes(a))) return undefined;
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(st.user?.username ?? '');
    if (!sa || !this.o.agentServiceAccounts.includes(`${sa[1]}/${sa[2]}`)) return undefined;
    return st.user?.extra?.[NODE_NAME_EXTRA]?.[0] || undefined; // not bound to a node: cannot tell which identities it may have
  }
}
