// The agent's Delta ADS client: wildcard subscriptions to workloads/services and authorization
// policies. Every response becomes a new MeshState, or a NACK if any resource does not decode
// (the previous state stays in force). Reconnects with backoff, resuming from the versions held;
// while the control plane is away the agent keeps serving on its last good state.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { decodeAddress, decodeAuthorization, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../api/codec.ts';
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import { adsService } from '../../api/protos.ts';
import { MeshState } from '../state/mesh-state.ts';

export interface XdsClientOptions {
  address: string; // host:port
  nodeId: string;
  /** TLS with the mesh root; undefined for plaintext (15010, local debugging). */
  tls?: { rootPem: string; serverName: string };
  /** Node credential sent as `authorization: Bearer <token>`. */
  token?: string;
  log: Logger;
}

interface DeltaResponse {
  typeUrl: string;
  nonce: string;
  resources: { name: string; version: string; resource?: { typeUrl: string; value: Buffer } }[];
  removedResources: string[];
}

export class DeltaXdsClient extends EventEmitter {
  state = MeshState.empty();
  private client: grpc.Client & { DeltaAggregatedResources: (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, DeltaResponse> };
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

  constructor(private readonly o: XdsClientOptions) {
    super();
    const Ads = adsService();
    const creds = o.tls ? grpc.credentials.createSsl(Buffer.from(o.tls.rootPem)) : grpc.credentials.createInsecure();
    const opts: grpc.ChannelOptions = o.tls ? { 'grpc.ssl_target_name_override': o.tls.serverName, 'grpc.default_authority': o.tls.serverName } : {};
    this.client = new Ads(o.address, creds, { ...opts, 'grpc.keepalive_time_ms': 30_000 }) as unknown as DeltaXdsClient['client'];
  }

  /** Resolves once the first response of every type arrived (bounded by the caller). */
  get synced(): boolean {
    return this.synced_.size === this.held.size;
  }

  whenSynced(): Promise<void> {
    if (this.synced_.size === this.held.size) return Promise.resolve();
    return new Promise((resolve) => this.once('synced', resolve));
  }

  start(): void {
    if (this.closed) return;
    const md = new grpc.Metadata();
    if (this.o.token) md.set('authorization', `Bearer ${this.o.token}`);
    const call = this.client.DeltaAggregatedResources(md);
    this.call = call;
    call.on('data', (r: DeltaResponse) => {
      this.connected = true;
      this.backoff = 500;
      this.onResponse(call, r);
    });
    call.on('error', (e: Error) => this.o.log.warn({ err: e.message }, 'xds stream error'));
    // 'status' ends every call, however it ended.
    call.on('status', () => {
      if (this.call !== call) return;
      this.connected = false;
      if (this.closed) return;
      const wait = this.backoff * (0.5 + Math.random() / 2);
      this.backoff = Math.min(this.backoff * 2, 30_000);
      this.o.log.warn({ retryMs: Math.round(wait) }, 'xds stream closed; serving on last state, reconnecting');
      setTimeout(() => this.start(), wait).unref();
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
      const changes = this.decode(r);
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
      if (this.synced_.size === this.held.size) this.emit('synced');
    }
  }

  private decode(r: DeltaResponse) {
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
      else if (this.state.workloads.has(n)) workloads.push([n, undefined]);
      else services.push([n, undefined]);
    }
    return { workloads, services, policies };
  }

  close(): void {
    this.closed = true;
    this.call?.cancel();
    this.client.close();
  }
}
