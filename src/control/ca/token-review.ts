// Credentials on Kubernetes are ServiceAccount tokens (projected, with our audience); the API
// server's TokenReview says whose they are. Two kinds of caller share one review of a token:
// - a node agent: only the agents' own ServiceAccounts count, and the node comes from the token's
//   binding, so an agent can never claim another node;
// - a workload asking for its own identity (a waypoint, as an Istio sidecar or istio-agent does):
//   any other ServiceAccount, with the audience we require. An agent's token is never a workload
//   credential: it asks for workloads' identities by name, not for one of its own.
//
// Reviews are API calls, and anyone who reaches 15012 can make us ask for one. So answers are
// cached by the token's hash in two bounded maps: positives for cacheMs (never past the token's
// own expiry), negatives briefly, so one bad token repeated costs one review per negativeCacheMs;
// neither map grows past its bound (oldest entries go first), and a flood of bad tokens cannot
// push out good ones. Concurrent checks of one token share one review, and at most maxInFlight
// reviews run at once: beyond that a check fails (the caller sees UNAVAILABLE and retries) rather
// than queueing without bound. API errors are never cached, nor is a yes for a token already past
// its own expiry: the API server decides again next time.
import { createHash } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { requestJson } from '../config/kube-api.ts';
import type { NodeAuthenticator, ServiceAccountRef, WorkloadAuthenticator } from './authenticator.ts';

export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

export interface TokenReviewOptions {
  /** "namespace/name" of the ServiceAccounts agents run as. */
  agentServiceAccounts: string[];
  /** Audiences the token must carry (the agent's and the workloads' projected tokens ask for these); none: workloads are refused. */
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

/** An accepted token's ServiceAccount and, if the token is bound to a pod on one, its node. */
interface Reviewed extends ServiceAccountRef {
  node?: string;
}

export class TokenReviewAuthenticator implements NodeAuthenticator {
  private readonly positive: BoundedCache<Reviewed>;
  private readonly negative: BoundedCache<true>;
  private readonly pending = new Map<string, Promise<Reviewed | undefined>>();
  private readonly agents: Set<string>;
  /** Reviews sent to the API server, for tests and metrics. */
  reviews = 0;
  /** Workload credentials (a workload's own identity), from the same reviews and caches. */
  readonly workloads: WorkloadAuthenticator = {
    authenticate: async (token) => {
      // Without a required audience any token the API server accepts would do, including the
      // default token of every pod, meant for the API server alone: refuse them all instead.
      if (!this.o.audiences.length) return undefined;
      const r = await this.reviewed(token);
      if (!r || this.agents.has(`${r.namespace}/${r.serviceAccount}`)) return undefined;
      return { namespace: r.namespace, serviceAccount: r.serviceAccount };
    },
  };

  constructor(
    private readonly kc: KubeConfig,
    private readonly o: TokenReviewOptions,
  ) {
    this.positive = new BoundedCache(o.maxEntries ?? 10_000);
    this.negative = new BoundedCache(o.maxEntries ?? 10_000);
    this.agents = new Set(o.agentServiceAccounts);
  }

  /** Answers held: valid tokens, refused tokens. */
  get cached(): { positive: number; negative: number } {
    return { positive: this.positive.size, negative: this.negative.size };
  }

  /** The node an agent's bound token belongs to, or undefined if it is not an agent's node credential. */
  async authenticate(token: string): Promise<string | undefined> {
    const r = await this.reviewed(token);
    if (!r || !this.agents.has(`${r.namespace}/${r.serviceAccount}`)) return undefined;
    return r.node; // not bound to a node: cannot tell which identities it may have
  }

  private async reviewed(token: string): Promise<Reviewed | undefined> {
    if (!token) return undefined;
    const key = createHash('sha256').update(token).digest('hex');
    const now = Date.now();
    const hit = this.positive.get(key, now);
    if (hit !== undefined) return hit;
    if (this.negative.get(key, now)) return undefined;
    const shared = this.pending.get(key);
    if (shared) return shared;
    if (this.pending.size >= (this.o.maxInFlight ?? 32)) throw new Error('token reviews: too many in flight; try again');
    const p = this.review(token, key).finally(() => this.pending.delete(key));
    this.pending.set(key, p);
    return p;
  }

  private async review(token: string, key: string): Promise<Reviewed | undefined> {
    this.reviews++;
    const review = (await requestJson(this.kc, 'POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: this.o.audiences },
    })) as { status?: TokenReviewStatus };
    const who = this.accepted(review.status ?? {});
    const now = Date.now();
    if (who === undefined) {
      this.negative.set(key, true, now + (this.o.negativeCacheMs ?? 5_000), now);
      return undefined;
    }
    const until = Math.min(now + (this.o.cacheMs ?? 30_000), expiryMs(token) ?? Infinity);
    if (until > now) this.positive.set(key, who, until, now);
    return who;
  }

  /** Whose an accepted ServiceAccount token is, or undefined if the review refused it or it is not for us. */
  private accepted(st: TokenReviewStatus): Reviewed | undefined {
    if (!st.authenticated) return undefined;
    if (this.o.audiences.length && !this.o.audiences.some((a) => st.audiences?.includes(a))) return undefined;
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(st.user?.username ?? '');
    if (!sa) return undefined; // a person or another authenticator's user: never a mesh credential
    const node = st.user?.extra?.[NODE_NAME_EXTRA]?.[0] || undefined;
    return { namespace: sa[1]!, serviceAccount: sa[2]!, ...(node ? { node } : {}) };
  }
}
