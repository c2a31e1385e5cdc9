// State-of-the-World ADS (StreamAggregatedResources) over the resource store, as proxyless gRPC
// and Envoy speak it. One handler per stream keeps state per type URL:
// - what the client subscribed to (a wildcard: every resource, for the full-state types);
// - what it holds: optimistically what we sent, reset to what it last accepted on a NACK;
// - versions it rejected: while the store holds exactly that version, the resource is served at
//   its last accepted version (or left out), so one bad object can neither keep a client in a
//   NACK loop nor take its working config away; any other version is sent as usual.
// Listener and Cluster responses carry the whole subscribed set (absence means deletion); other
// named types (RouteConfiguration, ClusterLoadAssignment) carry only what changed. A request that
// merely ACKs, or repeats the subscription, gets no response.
import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { anyMessage } from '../../../api/protos.ts';
import type { Resource, ResourceStore } from '../resources.ts';
import { StreamSet, type Authorize } from '../streams.ts';
import { checkNames, checkTypes, DEFAULT_LIMITS, isWildcard, NAMED_TYPES, reportNack, type AdsEvents, type StreamLimits } from '../subscriptions.ts';

interface SotwRequest {
  versionInfo: string;
  node?: { id?: string } | null;
  resourceNames: string[];
  typeUrl: string;
  responseNonce: string;
  errorDetail?: { code: number; message: string } | null;
}

interface TypeState {
  wildcard: boolean;
  names: Set<string>;
  /** Latest response; only a reply to it counts as ACK or NACK. */
  nonce: string;
  version: string;
  held: Map<string, Resource>;
  acked: Map<string, Resource>;
  /** Sent since the last ACK/NACK. */
  inflight: Map<string, Resource>;
  /** name -> version the client rejected */
  rejected: Map<string, string>;
  nacks: number;
}

export type SotwAdsEvents = AdsEvents;

export interface SotwAdsOptions {
  limits?: Partial<StreamLimits>;
}

export class SotwAdsServer {
  private readonly set: StreamSet<SotwStream, SotwRequest>;
  private get streams() {
    return this.set.streams;
  }
  /** NACKs received since start, for tests and config dumps. */
  nacks = 0;
  private readonly limits: StreamLimits;

  constructor(
    private readonly store: ResourceStore,
    private readonly log: Logger,
    private readonly events: SotwAdsEvents = {},
    o: SotwAdsOptions = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...o.limits };
    this.set = new StreamSet(events.onConnect);
    store.on('change', (typeUrl: string) => {
      for (const s of this.streams) s.push(typeUrl, false);
    });
  }

  get connected(): number {
    return this.streams.size;
  }

  /** Ends every stream with UNAVAILABLE, spread over `spreadMs` (StreamSet.drain); new ones are ended at once. */
  drain(spreadMs: number): Promise<void> {
    return this.set.drain(spreadMs);
  }

  /** What each connected client subscribed to, accepted and rejected. */
  clients(): { node: string; types: Record<string, { subscribed: string[] | '*'; version: string; acked: Record<string, string>; rejected: Record<string, string>; nacks: number }> }[] {
    return [...this.streams].map((s) => ({
      node: s.node,
      types: Object.fromEntries(
        [...s.types].map(([t, st]) => [
          t,
          {
            subscribed: st.wildcard ? '*' : [...st.names],
            version: st.version,
            acked: Object.fromEntries([...st.acked].map(([n, r]) => [n, r.version])),
            rejected: Object.fromEntries(st.rejected),
            nacks: st.nacks,
          },
        ]),
      ),
    }));
  }

  /** The grpc handler for StreamAggregatedResources. `authorize` may reject a stream before use. */
  handler(authorize?: Authorize) {
    const events: SotwAdsEvents = {
      ...this.events,
      onNack: (t, n, r) => {
        this.nacks++;
        this.events.onNack?.(t, n, r);
      },
    };
    return this.set.handler((call: grpc.ServerDuplexStream<SotwRequest, unknown>) => new SotwStream(call, this.store, this.log, events, this.limits), authorize);
  }
}

class SotwStream {
  readonly types = new Map<string, TypeState>();
  node = 'unknown';

  constructor(
    private readonly call: grpc.ServerDuplexStream<SotwRequest, unknown>,
    private readonly store: ResourceStore,
    private readonly log: Logger,
    private readonly events: SotwAdsEvents,
    private readonly limits: StreamLimits,
  ) {}

  onRequest(req: SotwRequest): void {
    if (req.node?.id) this.node = req.node.id;
    const typeUrl = req.typeUrl;
    if (!typeUrl) return;
    let st = this.types.get(typeUrl);
    const first = !st;
    if (first) checkTypes(this.limits, this.types.size + 1);
    st ??= { wildcard: false, names: new Set(), nonce: '', version: '', held: new Map(), acked: new Map(), inflight: new Map(), rejected: new Map(), nacks: 0 };
    this.types.set(typeUrl, st);
    // A nonce on the first request of a type refers to an earlier stream: nothing to acknowledge.
    if (req.responseNonce && !first) {
      // A reply to an older response: the client will answer the newer one too.
      if (req.responseNonce !== st.nonce) return;
      if (req.errorDetail?.message) this.nack(typeUrl, st, req.errorDetail.message);
      else {
        for (const [n, r] of st.inflight) {
          st.acked.set(n, r);
          st.rejected.delete(n); // a newer version was accepted
        }
        for (const n of [...st.acked.keys()]) if (!st.held.has(n)) st.acked.delete(n);
        st.inflight.clear();
        this.events.onAck?.(typeUrl, this.node);
      }
    }
    const names = req.resourceNames ?? [];
    checkNames(this.limits, typeUrl, names.length);
    const wildcard = isWildcard(typeUrl, names);
    const explicit = names.filter((n) => n !== '*');
    const changed = wildcard !== st.wildcard || explicit.length !== st.names.size || explicit.some((n) => !st.names.has(n));
    st.wildcard = wildcard;
    st.names = new Set(explicit);
    if (first || changed) this.push(typeUrl, first);
  }

  private nack(typeUrl: string, st: TypeState, reason: string): void {
    st.nacks++;
    for (const [n, r] of st.inflight) if (st.acked.get(n)?.version !== r.version) st.rejected.set(n, r.version);
    st.inflight.clear();
    st.held = new Map(st.acked); // the client kept what it had accepted
    reportNack(this.log, this.events, { node: this.node, typeUrl, reason, rejected: [...st.rejected.keys()] });
  }

  push(typeUrl: string, force: boolean): void {
    const st = this.types.get(typeUrl);
    if (!st) return;
    const all = this.store.get(typeUrl);
    const wanted = st.wildcard ? all.keys() : st.names.values();
    let send: Resource[];
    if (NAMED_TYPES.has(typeUrl)) {
      for (const n of [...st.held.keys()]) if (!st.wildcard && !st.names.has(n)) st.held.delete(n);
      send = [];
      for (const n of wanted) {
        const r = this.serveFrom(st, all, n);
        if (r && st.held.get(n)?.version !== r.version) send.push(r);
      }
      if (!send.length) return;
    } else {
      send = [];
      for (const n of wanted) {
        const r = this.serveFrom(st, all, n);
        if (r) send.push(r);
      }
      const same = send.length === st.held.size && send.every((r) => st.held.get(r.name)?.version === r.version);
      if (same && !force) return;
      st.held.clear();
    }
    for (const r of send) {
      st.held.set(r.name, r);
      st.inflight.set(r.name, r);
    }
    st.nonce = randomUUID();
    st.version = String(this.store.generation);
    this.call.write({ versionInfo: st.version, typeUrl, nonce: st.nonce, resources: send.map((r) => anyMessage(typeUrl, r.body)) });
  }

  /** The version to serve: the current one, unless this client rejected exactly that version. */
  private serveFrom(st: TypeState, all: ReadonlyMap<string, Resource>, name: string): Resource | undefined {
    const r = all.get(name);
    if (!r || st.rejected.get(name) !== r.version) return r;
    return st.acked.get(name);
  }

}
