// Who is calling the CA: a node agent, identified by a bearer token.
import { createHash } from 'node:crypto';
import { stat, readFile } from 'node:fs/promises';

export interface NodeAuthenticator {
  /** The node name the token belongs to, or undefined if it is not a valid node credential. */
  authenticate(token: string): Promise<string | undefined>;
}

const digest = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * Tokens from a JSON file `{ "<token>": "<node>" }`. The file is re-checked on every call (a stat,
 * re-read only when it changed), so added and revoked tokens take effect at once. Tokens are held
 * and looked up by hash, so lookup time says nothing about how close a guess was.
 */
export class StaticTokenAuthenticator implements NodeAuthenticator {
  private nodes = new Map<string, string>();
  private version = '';

  constructor(readonly path: string) {}

  /** Loads the file now, so a broken file fails startup instead of the first request. */
  static async open(path: string): Promise<StaticTokenAuthenticator> {
    const a = new StaticTokenAuthenticator(path);
    await a.refresh();
    return a;
  }

  async authenticate(token: string): Promise<string | undefined> {
    if (!token) return undefined;
    await this.refresh();
    return this.nodes.get(digest(token));
  }

  private async refresh(): Promise<void> {
    const s = await stat(this.path);
    const version = `${s.mtimeMs}:${s.size}:${s.ino}`;
    if (version === this.version) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(this.path, 'utf8'));
    } catch (e) {
      throw new Error(`node tokens ${this.path}: ${(e as Error).message}`, { cause: e });
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error(`node tokens ${this.path}: expected an object of token to node name`);
    }
    const nodes = new Map<string, string>();
    for (const [token, node] of Object.entries(parsed)) {
      if (typeof node !== 'string' || !node) throw new Error(`node tokens ${this.path}: node for a token is not a name`);
      nodes.set(digest(token), node);
    }
    this.nodes = nodes;
    this.version = version;
  }
}
