// The agent's xDS client: wildcard Delta subscriptions to workloads/services and authorization
// policies over the shared xDS client (src/xds). Every response becomes a new MeshState, or a NACK
// if any resource does not decode (the previous state stays in force). The protocol (reconnects
// with backoff resuming from the versions held, fresh token and root per connection, authFailing)
// is the shared client's; while the control plane is away the agent keeps serving on its last
// good state.
import { EventEmitter } from 'node:events';
import { decodeAddress, decodeAuthorization, encodeAuthorization, encodeService, encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../api/codec.ts';
import { policyKey, type AuthorizationPolicy, type Service, type Workload } from '../../api/mesh.ts';
import { XdsClient, type XdsClientOptions as SharedOptions, type XdsResource } from '../../xds/client.ts';
import { MeshState } from '../state/mesh-state.ts';

export type XdsClientOptions = Omit<SharedOptions, 'mode' | 'watches'>;

/** Resources in their xDS form, by type URL: what the agent keeps on disk (state/snapshot.ts). */
export type XdsResources = Record<string, { name: string; version: string; value: Uint8Array }[]>;

type Changes = Parameters<MeshState['with']>[0];

export class DeltaXdsClient extends EventEmitter {
  state = MeshState.empty();
  /** The state came from the node's cache (restore) and not yet from the control plane. */
  restored = false;
  private readonly ads: XdsClient;

  constructor(o: XdsClientOptions) {
    super();
    const apply = (typeUrl: string) => (u: { resources: XdsResource[]; removed: string[] }) => {
      // Nothing new (a reconnect, to this or another replica, where the versions held are current):
      // the state stays the same object, so nothing downstream sees a change.
      if (!u.resources.length && !u.removed.length) return;
      this.state = this.state.with(this.decode(typeUrl, u.resources, u.removed, this.state));
    };
    this.ads = new XdsClient({
      ...o,
      mode: 'delta',
      watches: [
        { typeUrl: TYPE_ADDRESS, apply: apply(TYPE_ADDRESS) },
        { typeUrl: TYPE_AUTHORIZATION, apply: apply(TYPE_AUTHORIZATION) },
      ],
    });
    let emitted: MeshState | undefined;
    this.ads.on('update', () => {
      if (this.state === emitted) return;
      emitted = this.state;
      this.emit('update', this.state);
    });
    this.ads.on('synced', () => {
      this.restored = false;
      this.emit('synced');
    });
  }

  get connected(): boolean {
    return this.ads.connected;
  }
  get nacks(): number {
    return this.ads.nacks;
  }
  /** Streams refused for the node credential (or with no credential to send) since the last response. */
  get authFailures(): number {
    return this.ads.authFailures;
  }
  get lastError(): string | undefined {
    return this.ads.lastError;
  }

  /** Resolves once the first response of every type arrived (bounded by the caller). */
  get synced(): boolean {
    return this.ads.synced;
  }

  /** The control plane keeps refusing this node's credential: reconnecting will not help by itself. */
  get authFailing(): boolean {
    return this.ads.authFailing;
  }

  /**
   * Starts from resources kept on the node (a previous run's last good state). They go through
   * the same decoding as a response, and their versions are sent on connect, so the control
   * plane sends only what changed since. Throws, and changes nothing, when any does not decode.
   */
  restore(saved: XdsResources): void {
    if (this.ads.answeredAny) return; // the control plane answered first: it wins
    const rs = Object.entries(saved).filter(([t]) => t === TYPE_ADDRESS || t === TYPE_AUTHORIZATION);
    let state = MeshState.empty();
    for (const [typeUrl, list] of rs) state = state.with(this.decode(typeUrl, list.map((x) => ({ name: x.name, version: x.version, body: x.value })), [], state));
    for (const [typeUrl, list] of rs) this.ads.resume(typeUrl, list.map((x) => [x.name, x.version]));
    this.state = state;
    this.restored = true;
    this.emit('update', this.state);
  }

  /** The resources held now, re-encoded in their xDS form (for the node's cache). */
  resources(): XdsResources {
    const a = this.ads.versions(TYPE_ADDRESS);
    const z = this.ads.versions(TYPE_AUTHORIZATION);
    const v = (held: ReadonlyMap<string, string>, name: string) => held.get(name) ?? '';
    return {
      [TYPE_ADDRESS]: [
        ...[...this.state.workloads].map(([name, w]) => ({ name, version: v(a, name), value: encodeWorkload(w) })),
        ...[...this.state.services].map(([name, s]) => ({ name, version: v(a, name), value: encodeService(s) })),
      ],
      [TYPE_AUTHORIZATION]: [...this.state.policies].map(([name, p]) => ({ name, version: v(z, name), value: encodeAuthorization(p) })),
    };
  }

  whenSynced(): Promise<void> {
    if (this.ads.synced) return Promise.resolve();
    return new Promise((resolve) => this.once('synced', resolve));
  }

  start(): void {
    this.ads.start();
  }

  /** A response's resources and removals as changes to `state`; throws when any does not decode. */
  private decode(typeUrl: string, resources: XdsResource[], removed: string[], state: MeshState): Changes {
    const workloads: [string, Workload | undefined][] = [];
    const services: [string, Service | undefined][] = [];
    const policies: [string, AuthorizationPolicy | undefined][] = [];
    for (const res of resources) {
      if (!res.body) throw new Error(`resource ${res.name}: empty`);
      if (typeUrl === TYPE_ADDRESS) {
        const a = decodeAddress(res.body);
        if ('workload' in a) workloads.push([res.name, a.workload]);
        else services.push([res.name, a.service]);
      } else {
        const p = decodeAuthorization(res.body);
        if (policyKey(p) !== res.name) throw new Error(`resource ${res.name}: policy names itself ${policyKey(p)}`);
        policies.push([res.name, p]);
      }
    }
    for (const n of removed) {
      if (typeUrl === TYPE_AUTHORIZATION) policies.push([n, undefined]);
      else if (state.workloads.has(n)) workloads.push([n, undefined]);
      else services.push([n, undefined]);
    }
    return { workloads, services, policies };
  }

  close(): void {
    this.ads.close();
  }
}
