// The HBONE client pool as callers use it: client/pool.ts over Node's HTTP/2 sessions
// (node/client.ts) unless `open` hands in another transport, e.g. nativeSessionOpener(). This
// wiring lives outside the pool so that the pool and the transports never import each other.
import type { HboneTunnel, SessionOpener } from './client/contract.ts';
import { SessionPool, type HbonePoolOptions } from './client/pool.ts';
import { openJsSession, type JsTunnel } from './node/client.ts';

export type { HboneConnectRequest, HboneTunnel, OutboundReuse, PoolKey, PoolSession, SessionOpener, SessionParams, TunnelResult } from './client/contract.ts';
export type { HbonePoolOptions, PoolStats } from './client/pool.ts';
export type { JsTunnel } from './node/client.ts';

/** `T`: what a connect yields, which depends on the sessions `open` makes (Node's HTTP/2 by default). */
export class HbonePool<T extends HboneTunnel = JsTunnel> extends SessionPool<T> {
  constructor(opts: HbonePoolOptions & { open?: SessionOpener<T> } = {}) {
    super({ ...opts, open: opts.open ?? (openJsSession as unknown as SessionOpener<T>) });
  }
}
