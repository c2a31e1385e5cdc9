// Node credentials on Kubernetes: the agent presents its ServiceAccount token (projected, bound
// to its pod and node, with our audience); the API server's TokenReview says whose it is. Only
// the agent's own ServiceAccount counts, and the node comes from the token's binding, so an agent
// can never claim another node.
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
  /** How long a positive answer is reused; tokens are hours-lived, reviews are API calls. */
  cacheMs?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

export class TokenReviewAuthenticator implements NodeAuthenticator {
  private cache = new Map<string, { node: string; until: number }>();

  constructor(
    private readonly kc: KubeConfig,
    private readonly o: TokenReviewOptions,
  ) {}

  async authenticate(token: string): Promise<string | undefined> {
    if (!token) return undefined;
    const key = createHash('sha256').update(token).digest('hex');
    const hit = this.cache.get(key);
    if (hit && hit.until > Date.now()) return hit.node;
    const review = (await requestJson(this.kc, 'POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences: this.o.audiences },
    })) as { status?: TokenReviewStatus };
    const st = review.status ?? {};
    if (!st.authenticated) return undefined;
    if (this.o.audiences.length && !this.o.audiences.some((a) => st.audiences?.includes(a))) return undefined;
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(st.user?.username ?? '');
    if (!sa || !this.o.agentServiceAccounts.includes(`${sa[1]}/${sa[2]}`)) return undefined;
    const node = st.user?.extra?.[NODE_NAME_EXTRA]?.[0];
    if (!node) return undefined; // not bound to a node: cannot tell which identities it may have
    this.cache.set(key, { node, until: Date.now() + (this.o.cacheMs ?? 30_000) });
    return node;
  }
}
