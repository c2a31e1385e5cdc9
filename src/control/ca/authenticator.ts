// Who is calling the CA: a node agent (asking for the workloads on its node) or a workload asking
// for its own identity (a waypoint), each identified by a bearer token.
import { createHash } from 'node:crypto';
import { stat, readFile } from 'node:fs/promises';
import { isDnsLabel, isDnsSubdomain } from '../../kube/names.ts';

export interface NodeAuthenticator {
  /** The node name the token belongs to, or undefined if it is not a valid node credential. */
  authenticate(token: string): Promise<string | undefined>;
}

/** A Kubernetes service account: what a workload credential proves. */
export interface ServiceAccountRef {
  namespace: string;
  serviceAccount: string;
}

export interface WorkloadAuthenticator {
  /** The service account the token belongs to, or undefined if it is not a valid workload credential. */
  authenticate(token: string): Promise<ServiceAccountRef | undefined>;
}

const digest = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * A JSON file `{ "<token>": <value> }`, re-checked on every call (a stat, re-read only when it
 * changed), so added and revoked tokens take effect at once. Tokens are held and looked up by
 * hash, so lookup time says nothing about how close a guess was. A file that cannot be read or
 * parsed fails the lookup (the caller refuses), never falls back to an older copy.
 */
class TokenFile<V> {
  private values = new Map<string, V>();
  private version = '';

  constructor(
    readonly path: string,
    /** What the file holds, for errors: "node tokens", "workload tokens". */
    private readonly what: string,
    /** The value for one entry, or what is wrong with it (never naming the token). */
    private readonly parse: (value: unknown) => { value: V } | { error: string },
  ) {}

  async lookup(token: string): Promise<V | undefined> {
    if (!token) return undefined;
    await this.refresh();
    return this.values.get(digest(token));
  }

  async refresh(): Promise<void> {
    const s = await stat(this.path);
    const version = `${s.mtimeMs}:${s.size}:${s.ino}`;
    if (version === this.version) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(this.path, 'utf8'));
    } catch (e) {
      throw new Error(`${this.what} ${this.path}: ${(e as Error).message}`, { cause: e });
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error(`${this.what} ${this.path}: expected an object of token to ${this.what === 'node tokens' ? 'node name' : '"<namespace>/<service account>"'}`);
    }
    const values = new Map<string, V>();
    let i = 0;
    // An empty token is kept but never matches: lookup refuses an empty token first.
    for (const [token, value] of Object.entries(parsed)) {
      i++;
      const v = this.parse(value);
      if ('error' in v) throw new Error(`${this.what} ${this.path}: entry ${i}: ${v.error}`);
      values.set(digest(token), v.value);
    }
    this.values = values;
    this.version = version;
  }
}

/** Node tokens from a JSON file `{ "<token>": "<node>" }` (the lab's node credentials). */
export class StaticTokenAuthenticator implements NodeAuthenticator {
  private readonly file: TokenFile<string>;

  constructor(readonly path: string) {
    this.file = new TokenFile<string>(path, 'node tokens', (node) => (typeof node === 'string' && node ? { value: node } : { error: 'node for a token is not a name' }));
  }

  /** Loads the file now, so a broken file fails startup instead of the first request. */
  static async open(path: string): Promise<StaticTokenAuthenticator> {
    const a = new StaticTokenAuthenticator(path);
    await a.file.refresh();
    return a;
  }

  authenticate(token: string): Promise<string | undefined> {
    return this.file.lookup(token);
  }
}

/** "<namespace>/<service account>" as Kubernetes names them, or what is wrong with it. */
export function parseServiceAccountRef(v: unknown): ServiceAccountRef | string {
  if (typeof v !== 'string') return 'want "<namespace>/<service account>", got ' + (v === null ? 'null' : typeof v);
  const [namespace, serviceAccount, ...rest] = v.split('/');
  if (rest.length || !namespace || !serviceAccount) return `"${v}" is not "<namespace>/<service account>"`;
  if (!isDnsLabel(namespace)) return `"${namespace}" in "${v}" is not a namespace name (a DNS-1123 label)`;
  if (!isDnsSubdomain(serviceAccount)) return `"${serviceAccount}" in "${v}" is not a service account name (a DNS-1123 subdomain)`;
  return { namespace, serviceAccount };
}

/**
 * Workload tokens from a JSON file `{ "<token>": "<namespace>/<service account>" }`: outside
 * Kubernetes (the lab), what a pod's projected service-account token is on a cluster.
 */
export class StaticWorkloadTokenAuthenticator implements WorkloadAuthenticator {
  private readonly file: TokenFile<ServiceAccountRef>;

  constructor(readonly path: string) {
    this.file = new TokenFile<ServiceAccountRef>(path, 'workload tokens', (v) => {
      const sa = parseServiceAccountRef(v);
      return typeof sa === 'string' ? { error: sa } : { value: sa };
    });
  }

  /** Loads the file now, so a broken file fails startup instead of the first request. */
  static async open(path: string): Promise<StaticWorkloadTokenAuthenticator> {
    const a = new StaticWorkloadTokenAuthenticator(path);
    await a.file.refresh();
    return a;
  }

  authenticate(token: string): Promise<ServiceAccountRef | undefined> {
    return this.file.lookup(token);
  }
}
