// A generic xDS client over ADS (envoy.service.discovery.v3.AggregatedDiscoveryService), in either
// variant: Delta (DeltaAggregatedResources) or State of the World (StreamAggregatedResources).
// It knows the protocol and nothing of what the resources mean: the caller watches type URLs and
// gives each a handler that decodes and applies a response, or throws to refuse it.
//
// Per type URL it keeps the subscription (a wildcard or names) and the version held of each
// resource; it ACKs what the handler applied and NACKs what it refused (INVALID_ARGUMENT with the
// handler's message), keeping the versions it held, so the handler's last good state stays in
// force. Reconnects with backoff; on a new stream every type is asked for again, Delta with the
// versions held (initial_resource_versions) so the server sends only what changed, SotW with the
// last version accepted. A response of a type not watched is ignored. 'synced' is emitted once
// every watched type has had a response (applied or refused) or subscribes to no names; 'update'
// after each applied one. A type subscribed to no names is not asked for until it has some (an
// empty first request would be a wildcard).
//
// The token and the mesh root are read again for every connection: projected tokens expire and the
// root may rotate; a credential refused on several reconnects without a response in between is
// reported (authFailing), so readiness can show it instead of staying green.
//
// Lifted out of the agent's Delta client (src/agent/xds) so the agent and the waypoint share it.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { adsService } from '../api/protos.ts';
import { deltaDialect, sotwDialect, type Dialect, type TypeState } from './dialects.ts';
import type { XdsWatch } from './types.ts';

export type { XdsResource, XdsUpdate, XdsWatch } from './types.ts';

export interface XdsClientOptions {
  address: string; // host:port
  nodeId: string;
  /** Delta (the default) or State of the World. */
  mode?: 'delta' | 'sotw';
  /** What to subscribe to, in the order the requests go out. */
  watches: XdsWatch[];
  /** TLS with the mesh root (a function is called per connection); undefined for plaintext (15010, local debugging). */
  tls?: { rootPem: string | (() => string); serverName: string };
  /** Node credential sent as `authorization: Bearer <token>`; a function is called per connection. */
  token?: string | (() => string);
  /** Consecutive refusals of the credential before authFailing turns true. Default 3. */
  authFailureThreshold?: number;
  /** The largest response accepted; a larger one ends the stream (then reconnect). Default: grpc-js's, 4 MiB. */
  maxResponseBytes?: number;
  log: Logger;
}

/** Subscribed to no names: nothing to ask for, and nothing to wait for. */
const none = (t: TypeState) => t.names !== '*' && t.names.size === 0;

type AdsClient = grpc.Client & Record<string, (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>>;

export class XdsClient extends EventEmitter {
  private readonly types = new Map<string, TypeState>();
  private readonly dialect: Dialect;
  private client?: { rootPem?: string; ads: AdsClient };
  private call?: grpc.ClientDuplexStream<unknown, unknown>;
  /** The current call has not ended: requests written now reach the server. */
  private open = false;
  private readonly answered = new Set<string>();
  private syncedOnce = false;
  private backoff = 500;
  private closed = false;
  connected = false;
  nacks = 0;
  /** Streams refused for the node credential (or with no credential to send) since the last response. */
  authFailures = 0;
  lastError?: string;

  constructor(private readonly o: XdsClientOptions) {
    super();
    this.dialect = o.mode === 'sotw' ? sotwDialect : deltaDialect;
    for (const w of o.watches) {
      if (this.types.has(w.typeUrl)) throw new Error(`${w.typeUrl} watched twice`);
      if (o.mode === 'sotw' && !w.nameOf) throw new Error(`${w.typeUrl}: State of the World needs nameOf (its responses do not name resources)`);
      this.types.set(w.typeUrl, { watch: w, names: w.names && !w.names.includes('*') ? new Set(w.names) : '*', held: new Map(), version: '', nonce: '', requested: false });
    }
  }

  /** Every watched type has had a response, or subscribes to no names. */
  get synced(): boolean {
    for (const [typeUrl, t] of this.types) if (!this.answered.has(typeUrl) && !none(t)) return false;
    return true;
  }

  /** Some type has had a response (from the server, not restored). */
  get answeredAny(): boolean {
    return this.answered.size > 0;
  }

  /** The control plane keeps refusing this node's credential: reconnecting will not help by itself. */
  get authFailing(): boolean {
    return this.authFailures >= (this.o.authFailureThreshold ?? 3);
  }

  whenSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve) => this.once('synced', resolve));
  }

  /** The versions held of a type's resources, by name. */
  versions(typeUrl: string): ReadonlyMap<string, string> {
    return this.types.get(typeUrl)?.held ?? new Map();
  }

  /**
   * Starts a type from versions held elsewhere (resources kept on the node, already applied by the
   * caller): Delta sends them on connect, so the server sends only what changed since.
   */
  resume(typeUrl: string, versions: Iterable<[string, string]>): void {
    const t = this.types.get(typeUrl);
    if (t) t.held = new Map(versions);
  }

  /** Changes what a type subscribes to ('*': every resource); asks the server at once when connected. */
  subscribe(typeUrl: string, names: string[] | '*'): void {
    const t = this.types.get(typeUrl);
    if (!t) throw new Error(`${typeUrl} is not watched`);
    const next: Set<string> | '*' = names === '*' || names.includes('*') ? '*' : new Set(names);
    const before = t.names;
    t.names = next;
    if (this.call && this.open) {
      if (t.requested) {
        const request = this.dialect.resubscribe(t, before);
        if (request) this.call.write(request);
      } else this.request(this.call, t);
    }
    // Names that left the subscription are dropped here: Delta servers need not report them
    // removed, nor SotW servers of a type sent one at a time.
    if (!this.dialect.fullState(t)) {
      const gone = next === '*' ? [] : [...t.held.keys()].filter((n) => !next.has(n));
      for (const n of gone) t.held.delete(n);
      if (gone.length) {
        try {
          t.watch.apply({ typeUrl, version: t.version, resources: [], removed: gone });
        } catch (e) {
          this.o.log.warn({ typeUrl, err: (e as Error).message }, 'xds: dropping unsubscribed resources failed');
        }
      }
    }
    this.checkSynced();
  }

  /** A channel trusting the current root; a new one when the root changed since the last connect. */
  private channel(): AdsClient {
    const tls = this.o.tls;
    const rootPem = tls ? (typeof tls.rootPem === 'function' ? tls.rootPem() : tls.rootPem) : undefined;
    if (this.client && this.client.rootPem === rootPem) return this.client.ads;
    this.client?.ads.close();
    const Ads = adsService();
    const creds = rootPem !== undefined ? grpc.credentials.createSsl(Buffer.from(rootPem)) : grpc.credentials.createInsecure();
    const opts: grpc.ChannelOptions = tls ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {};
    if (this.o.maxResponseBytes !== undefined) opts['grpc.max_receive_message_length'] = this.o.maxResponseBytes;
    const ads = new Ads(this.o.address, creds, { ...opts, 'grpc.keepalive_time_ms': 30_000 }) as unknown as AdsClient;
    this.client = { rootPem, ads };
    return ads;
  }

  private retry(): void {
    const wait = this.backoff * (0.5 + Math.random() / 2);
    this.backoff = Math.min(this.backoff * 2, 30_000);
    this.o.log.warn({ retryMs: Math.round(wait), err: this.lastError }, 'xds stream closed; serving on last state, reconnecting');
    setTimeout(() => this.start(), wait).unref();
  }

  start(): void {
    if (this.closed) return;
    const md = new grpc.Metadata();
    let ads: AdsClient;
    try {
      // Read now, not once: the token file is replaced before the old token expires.
      const token = typeof this.o.token === 'function' ? this.o.token() : this.o.token;
      if (this.o.token !== undefined && !token) throw Object.assign(new Error('node credential is empty'), { auth: true });
      if (token) md.set('authorization', `Bearer ${token}`);
      ads = this.channel();
    } catch (e) {
      if ((e as { auth?: boolean }).auth || (e as NodeJS.ErrnoException).code) this.authFailures++; // no credential to send
      this.lastError = `cannot connect: ${(e as Error).message}`;
      return this.retry();
    }
    const call = ads[this.dialect.method]!(md);
    this.call = call;
    this.open = true;
    call.on('data', (r: Record<string, unknown>) => {
      this.connected = true;
      this.backoff = 500;
      this.authFailures = 0;
      this.lastError = undefined;
      this.onResponse(call, r);
    });
    call.on('error', (e: Error) => this.o.log.warn({ err: e.message }, 'xds stream error'));
    // 'status' ends every call, however it ended (a response that does not parse or is too large included).
    call.on('status', (st: grpc.StatusObject) => {
      if (this.call !== call) return;
      this.connected = false;
      this.open = false;
      if (this.closed) return;
      if (st.code === grpc.status.UNAUTHENTICATED || st.code === grpc.status.PERMISSION_DENIED) this.authFailures++;
      this.lastError = `${grpc.status[st.code] ?? st.code}: ${st.details}`;
      // A fresh channel for the next attempt: grpc-js backs a failed channel off on its own, up to
      // 2 minutes, which would keep the client away from a control plane that is back.
      this.client?.ads.close();
      this.client = undefined;
      this.retry();
    });
    for (const t of this.types.values()) {
      t.requested = false;
      this.request(call, t);
    }
  }

  /** The first request of a type on a stream, once it subscribes to something. */
  private request(call: grpc.ClientDuplexStream<unknown, unknown>, t: TypeState): void {
    if (none(t)) return;
    t.requested = true;
    call.write(this.dialect.subscribe(t, this.o.nodeId));
  }

  private checkSynced(): void {
    if (this.syncedOnce || !this.synced) return;
    this.syncedOnce = true;
    this.emit('synced');
  }

  private onResponse(call: grpc.ClientDuplexStream<unknown, unknown>, r: Record<string, unknown>): void {
    const typeUrl = typeof r.typeUrl === 'string' ? r.typeUrl : '';
    const t = this.types.get(typeUrl);
    if (!t) return; // not watched: nothing to apply it to, and no state it could touch
    const nonce = typeof r.nonce === 'string' ? r.nonce : '';
    try {
      const update = this.dialect.read(t, r);
      t.watch.apply(update);
      for (const res of update.resources) t.held.set(res.name, res.version);
      for (const n of update.removed) t.held.delete(n);
      call.write(this.dialect.ack(t, nonce, update.version));
      this.emit('update', typeUrl, update);
    } catch (e) {
      this.nacks++;
      this.o.log.error({ typeUrl, err: (e as Error).message }, 'xds NACK: keeping the previous state');
      call.write(this.dialect.nack(t, nonce, (e as Error).message));
    }
    if (!this.answered.has(typeUrl)) {
      this.answered.add(typeUrl);
      this.checkSynced();
    }
  }

  close(): void {
    this.closed = true;
    this.call?.cancel();
    this.client?.ads.close();
  }
}
