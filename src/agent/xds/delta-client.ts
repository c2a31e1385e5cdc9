// The agent's Delta ADS client: wildcard subscriptions to workloads/services and authorization
// policies. Every response becomes a new MeshState, or a NACK if any resource does not decode
// (the previous state stays in force). Reconnects with backoff, resuming from the versions held;
// while the control plane is away the agent keeps serving on its last good state.
//
// The token and the mesh root are read again for every connection: projected tokens expire (the
// DaemonSet's after 12 h) and the root may rotate; a credential refused on several reconnects
// without a response in between is reported (authFailing), so readiness shows it instead of staying green.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { decodeAddress, decodeAuthorization, encodeAuthorization, encodeService, encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../api/codec.ts';
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import { adsService } from '../../api/protos.ts';
import { MeshState } from '../state/mesh-state.ts';

export interface XdsClientOptions {
  address: string; // host:port
  nodeId: string;
  /** TLS with the mesh root (a function is called per connection); undefined for plaintext (15010, local debugging). */
  tls?: { rootPem: string | (() => string); serverName: string };
  /** Node credential sent as `authorization: Bearer <token>`; a function is called per connection. */
  token?: string | (() => string);
  /** Consecutive refusals of the credential before authFailing turns true. Default 3. */
  authFailureThreshold?: number;
  log: Logger;
}

/** Resources in their xDS form, by type URL: what the agent keeps on disk (state/snapshot.ts). */
export type XdsResources = Record<string, { name: string; version: string; value: Uint8Array }[]>;

type AdsClient = grpc.Client & { DeltaAggregatedResources: (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, DeltaResponse> };

interface DeltaResponse {
  typeUrl: string;
  nonce: string;
  resources: { name: string; version: string; resource?: { typeUrl: string; value: Buffer } }[];
  removedResources: string[];
}

export class DeltaXdsClient extends EventEmitter {
  state = MeshState.empty();
  private client?: { rootPem?: string; ads: AdsClient };
  private call?: grpc.ClientDuplexStream<unknown, DeltaResponse>;
  private held = new Map<string, Map<string, string>>([
    [TYPE_ADDRESS, new Map()],
    [TYPE_AUTHORIZATION, new Map()],
  ]);
  private synced_ = new Set<string>();
  private backoff = 500;
  private closed = false;
  connected = false;
  nacks = 0;
  /** The state came from the node's cache (restore) and not yet from the control plane. */
  restored = false;
  /** Streams refused for the node credential (or with no credential to send) since the last response. */
  authFailures = 0;
  lastError?: string;

  constructor(private readonly o: XdsClientOptions) {
    super();
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
    const ads = new Ads(this.o.address, creds, { ...opts, 'grpc.keepalive_time_ms': 30_000 }) as unknown as AdsClient;
    this.client = { rootPem, ads };
    return ads;
  }

  /** Resolves once the first response of every type arrived (bounded by the caller). */
  get synced(): boolean {
    return this.synced_.size === this.held.size;
  }

  /** The control plane keeps refusing this node's credential: reconnecting will not help by itself. */
  get authFailing(): boolean {
    return this.authFailures >= (this.o.authFailureThreshold ?? 3);
  }

  /**
   * Starts from resources kept on the node (a previous run's last good state). They go through
   * the same decoding as a response, and their versions are sent on connect, so the control
   * plane sends only what changed since. Throws, and changes nothing, when any does not decode.
   */
  restore(saved: XdsResources): void {
    if (this.synced_.size) return; // the control plane answered first: it wins
    const rs = Object.entries(saved).filter(([t]) => this.held.has(t));
    let state = MeshState.empty();
    for (const [typeUrl, list] of rs) {
      const r: DeltaResponse = { typeUrl, nonce: '', resources: list.map((x) => ({ name: x.name, version: x.version, resource: { typeUrl, value: Buffer.from(x.value) } })), removedResources: [] };
      state = state.with(this.decode(r, state));
    }
    for (const [typeUrl, list] of rs) this.held.set(typeUrl, new Map(list.map((x) => [x.name, x.version])));
    this.state = state;
    this.restored = true;
    this.emit('update', this.state);
  }

  /** The resources held now, re-encoded in their xDS form (for the node's cache). */
  resources(): XdsResources {
    const a = this.held.get(TYPE_ADDRESS)!;
    const z = this.held.get(TYPE_AUTHORIZATION)!;
    const v = (held: Map<string, string>, name: string) => held.get(name) ?? '';
    return {
      [TYPE_ADDRESS]: [
        ...[...this.state.workloads].map(([name, w]) => ({ name, version: v(a, name), value: encodeWorkload(w) })),
        ...[...this.state.services].map(([name, s]) => ({ name, version: v(a, name), value: encodeService(s) })),
      ],
      [TYPE_AUTHORIZATION]: [...this.state.policies].map(([name, p]) => ({ name, version: v(z, name), value: encodeAuthorization(p) })),
    };
  }

  whenSynced(): Promise<void> {
    if (this.synced_.size === this.held.size) return Promise.resolve();
    return new Promise((resolve) => this.once('synced', resolve));
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
    const call = ads.DeltaAggregatedResources(md);
    this.call = call;
    call.on('data', (r: DeltaResponse) => {
      this.connected = true;
      this.backoff = 500;
      this.authFailures = 0;
      this.lastError = undefined;
      this.onResponse(call, r);
    });
    call.on('error', (e: Error) => this.o.log.warn({ err: e.message }, 'xds stream error'));
    // 'status' ends every call, however it ended.
    call.on('status', (st: grpc.StatusObject) => {
      if (this.call !== call) return;
      this.connected = false;
      if (this.closed) return;
      if (st.code === grpc.status.UNAUTHENTICATED || st.code === grpc.status.PERMISSION_DENIED) this.authFailures++;
      this.lastError = `${grpc.status[st.code] ?? st.code}: ${st.details}`;
      // A fresh channel for the next attempt: grpc-js backs a failed channel off on its own, up to
      // 2 minutes, which would keep the agent away from a control plane that is back.
      this.client?.ads.close();
      this.client = undefined;
      this.retry();
    });
    for (const [typeUrl, held] of this.held)
      call.write({
        node: { id: this.o.nodeId },
        typeUrl,
        resourceNamesSubscribe: ['*'],
        initialResourceVersions: Object.fromEntries(held),
      });
  }

  private onResponse(call: grpc.ClientDuplexStream<unknown, DeltaResponse>, r: DeltaResponse): void {
    const held = this.held.get(r.typeUrl);
    if (!held) return;
    try {
      const changes = this.decode(r, this.state);
      this.state = this.state.with(changes);
      for (const res of r.resources) held.set(res.name, res.version);
      for (const n of r.removedResources) held.delete(n);
      call.write({ typeUrl: r.typeUrl, responseNonce: r.nonce });
      this.emit('update', this.state);
    } catch (e) {
      this.nacks++;
      this.o.log.error({ typeUrl: r.typeUrl, err: (e as Error).message }, 'xds NACK: keeping the previous state');
      call.write({ typeUrl: r.typeUrl, responseNonce: r.nonce, errorDetail: { code: 3, message: (e as Error).message } });
    }
    if (!this.synced_.has(r.typeUrl)) {
      this.synced_.add(r.typeUrl);
      if (this.synced_.size === this.held.size) {
        this.restored = false;
        this.emit('synced');
      }
    }
  }

  private decode(r: DeltaResponse, state: MeshState) {
    const workloads: [string, Workload | undefined][] = [];
    const services: [string, Service | undefined][] = [];
    const policies: [string, AuthorizationPolicy | undefined][] = [];
    for (const res of r.resources) {
      if (!res.resource?.value) throw new Error(`resource ${res.name}: empty`);
      if (r.typeUrl === TYPE_ADDRESS) {
        const a = decodeAddress(res.resource.value);
        if ('workload' in a) workloads.push([res.name, a.workload]);
        else services.push([res.name, a.service]);
      } else {
        const p = decodeAuthorization(res.resource.value);
        if (policyKey(p) !== res.name) throw new Error(`resource ${res.name}: policy names itself ${policyKey(p)}`);
        policies.push([res.name, p]);
      }
    }
    for (const n of r.removedResources) {
      if (r.typeUrl === TYPE_AUTHORIZATION) policies.push([n, undefined]);
      else if (state.workloads.has(n)) workloads.push([n, undefined]);
      else services.push([n, undefined]);
    }
    return { workloads, services, policies };
  }

  close(): void {
    this.closed = true;
    this.call?.cancel();
    this.client?.ads.close();
  }
}
