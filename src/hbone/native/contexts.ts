// TLS contexts of the native relay, one per certificate chain and role: built once from the PEM
// credentials, replaced (and the old one released) when a certificate rotates. Sessions keep the
// context they started with.
import type { Credentials } from '../settings.ts';
import { relayAddon } from './addon.ts';

export class RelayContexts {
  /** Keyed by role and owner (the identity the certificate is for). */
  private readonly byOwner = new Map<string, { chain: string; ctx: number }>();

  get(identity: string, c: Credentials, server: boolean): number {
    const owner = `${server ? 'server' : 'client'} ${identity}`;
    const cur = this.byOwner.get(owner);
    if (cur && cur.chain === c.certChain) return cur.ctx;
    const ctx = relayAddon().context(c.key, c.certChain, c.root, server);
    if (cur) relayAddon().freeContext(cur.ctx);
    this.byOwner.set(owner, { chain: c.certChain, ctx });
    return ctx;
  }

  close(): void {
    for (const { ctx } of this.byOwner.values()) relayAddon().freeContext(ctx);
    this.byOwner.clear();
  }
}
