// TLS contexts of the native relay, one per role and set of credentials, shared by every holder
// presenting the same ones: the HBONE servers of all pods with one identity on a node use one
// SSL_CTX, not one each (OpenSSL 3 makes each context a large allocation: its own method tables,
// cipher and group lists, certificate store). A holder moving to new credentials (a rotation) takes
// or makes their context and lets go of the old one, which is freed when nobody holds it.
// Sessions keep the context they started with (the relay holds a reference of its own).
import type { Credentials } from '../settings.ts';
import { relayAddon } from './addon.ts';

interface Shared {
  ctx: number;
  holders: number;
}

interface Held {
  id: string;
  /** What the context was made from: compared first, by reference in the usual case of the same strings. */
  c: Credentials;
  shared: Shared;
}

export class RelayContexts {
  private readonly byCredentials = new Map<string, Shared>();
  private readonly byHolder = new Map<string, Held>();

  /** The context for `holder` presenting `c`; made once per role and credentials. */
  get(holder: string, c: Credentials, server: boolean): number {
    const owner = `${server ? 'server' : 'client'} ${holder}`;
    const cur = this.byHolder.get(owner);
    if (cur && cur.c.certChain === c.certChain && cur.c.key === c.key && cur.c.root === c.root) return cur.shared.ctx;
    const id = `${server ? 'server' : 'client'}\n${c.certChain}\n${c.root}\n${c.key}`;
    let shared = this.byCredentials.get(id);
    if (!shared) {
      shared = { ctx: relayAddon().context(c.key, c.certChain, c.root, server), holders: 0 };
      this.byCredentials.set(id, shared);
    }
    shared.holders++;
    this.byHolder.set(owner, { id, c, shared });
    if (cur) this.unhold(cur);
    return shared.ctx;
  }

  /** `holder` no longer makes sessions; its context is freed unless another holder uses it. */
  release(holder: string, server: boolean): void {
    const owner = `${server ? 'server' : 'client'} ${holder}`;
    const cur = this.byHolder.get(owner);
    if (!cur) return;
    this.byHolder.delete(owner);
    this.unhold(cur);
  }

  /** Contexts alive, and holders using them (config_dump, tests). */
  stats(): { contexts: number; holders: number } {
    return { contexts: this.byCredentials.size, holders: this.byHolder.size };
  }

  close(): void {
    for (const { ctx } of this.byCredentials.values()) relayAddon().freeContext(ctx);
    this.byCredentials.clear();
    this.byHolder.clear();
  }

  private unhold(h: Held): void {
    if (--h.shared.holders > 0) return;
    this.byCredentials.delete(h.id);
    relayAddon().freeContext(h.shared.ctx);
  }
}

/** The inbound HBONE servers' contexts, shared across every server of the process (one per pod). */
export const serverContexts = new RelayContexts();
