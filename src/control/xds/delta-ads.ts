// Delta ADS (envoy.service.discovery.v3 DeltaAggregatedResources) over the resource store.
// Per stream and type: what the client subscribed to (wildcard or names), which version of each
// resource it holds (from our sends, or its initial_resource_versions after a reconnect), and the
// nonces still awaiting ACK. A NACK keeps the client on what it had; it is logged and counted.
import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Map as PMap } from 'immutable';
import type { Logger } from 'pino';
import { deltaResponse } from './delta-wire.ts';
import type { Resource, ResourceStore } from './resources.ts';
import { SendGate } from './send-gate.ts';
import { StreamSet, type Authorize } from './streams.ts';

interface DeltaRequest {
  node?: { id?: string; cluster?: string; metadata?: unknown };
  typeUrl: string;
  resourceNamesSubscribe: string[];
  resourceNamesUnsubscribe: string[];
  initialResourceVersions: Record<string, string>;
  responseNonce: string;
  errorDetail?: { code: number; message: string } | null;
}

interface TypeState {
  wildcard: boolean;
  names: Set<string>;
  /**
   * name -> version the client holds once what was queued arrives. A persistent map: for a
   * wildcard subscriber every push leaves it equal to the store's, so it is the store's own map,
   * shared by all such streams rather than a copy per agent.
   */
  held: PMap<string, string>;
  pending: Set<string>;
}

export interface DeltaAdsEvents {
  onAck?: (typeUrl: string, node: string) => void;
  onNack?: (typeUrl: string, node: string, reason: string) => void;
  onConnect?: (node: string, connected: number) => void;
}

export class DeltaAdsServer {
  private readonly set: StreamSet<Stream, DeltaRequest>;
  private readonly gate = new SendGate();
  private get streams() {
    return this.set.streams;
  }

  constructor(
    private readonly store: ResourceStore,
    private readonly log: Logger,
    private readonly events: DeltaAdsEvents = {},
  ) {
    this.set = new StreamSet(events.onConnect);
    store.on('change', (typeUrl: string, changed: string[], removed: string[]) => {
      for (const s of this.streams) s.pushChanges(typeUrl, changed, removed);
    });
  }

  get connected(): number {
    return this.streams.size;
  }

  /** Node ids of connected clients and what they hold, for config_dump and tests. */
  clients(): { node: string; types: Record<string, number> }[] {
    return [...this.streams].map((s) => ({ node: s.node, types: Object.fromEntries([...s.types].map(([t, st]) => [t, st.held.size])) }));
  }

  /** The grpc handler for DeltaAggregatedResources. `authorize` may reject a stream before use. */
  handler(authorize?: Authorize) {
    return this.set.handler((call) => new Stream(call, this.store, this.log, this.events, this.gate), authorize);
  }
}

class Stream {
  readonly types = new Map<string, TypeState>();
  node = 'unknown';
  private readonly outbox: { nonce: string; msg: Buffer }[] = [];
  /** Gate releases of responses awaiting the client's ACK or NACK, by nonce. */
  private readonly unacked = new Map<string, () => void>();
  /** A response is waiting for the send gate; later ones queue behind it. */
  private waiting = false;

  constructor(
    private readonly call: grpc.ServerDuplexStream<DeltaRequest, unknown>,
    private readonly store: ResourceStore,
    private readonly log: Logger,
    private readonly events: DeltaAdsEvents,
    private readonly gate: SendGate,
  ) {}

  onRequest(req: DeltaRequest): void {
    if (req.node?.id) this.node = req.node.id;
    const typeUrl = req.typeUrl;
    let st = this.types.get(typeUrl);
    if (req.responseNonce) {
      this.unacked.get(req.responseNonce)?.();
      this.unacked.delete(req.responseNonce);
      if (!st?.pending.delete(req.responseNonce)) return; // stale nonce: superseded response
      if (req.errorDetail && req.errorDetail.message) {
        this.log.warn({ node: this.node, typeUrl, reason: req.errorDetail.message }, 'xds NACK');
        this.events.onNack?.(typeUrl, this.node, req.errorDetail.message);
      } else this.events.onAck?.(typeUrl, this.node);
      if (!req.resourceNamesSubscribe.length && !req.resourceNamesUnsubscribe.length) return;
    }
    if (!st) {
      // First request for a type: an empty subscription (or "*") is the wildcard.
      st = { wildcard: req.resourceNamesSubscribe.length === 0, names: new Set(), held: PMap(Object.entries(req.initialResourceVersions ?? {})), pending: new Set() };
      this.types.set(typeUrl, st);
    }
    for (const n of req.resourceNamesSubscribe) {
      if (n === '*') st.wildcard = true;
      else st.names.add(n);
    }
    for (const n of req.resourceNamesUnsubscribe) {
      if (n === '*') st.wildcard = false;
      else st.names.delete(n);
    }
    this.push(typeUrl, true);
  }

  /** Sends what this client lacks or holds in an old version, and what it should drop. */
  push(typeUrl: string, always = false): void {
    const st = this.types.get(typeUrl);
    if (!st) return;
    const all = this.store.get(typeUrl);
    const wanted = (n: string) => st.wildcard || st.names.has(n);
    const resources = [];
    for (const r of all.values()) if (wanted(r.name) && st.held.get(r.name) !== r.version) resources.push(r);
    const removed = [...st.held.keys()].filter((n) => !all.has(n) || !wanted(n));
    // Names asked for explicitly that do not exist yet are reported removed, so the client knows.
    for (const n of st.names) if (!all.has(n) && !st.held.has(n) && always) removed.push(n);
    if (!resources.length && !removed.length && !always) return;
    this.send(typeUrl, st, resources, removed);
  }

  /**
   * After a store change: looks only at the names that changed. `held` always records what this
   * client was sent, so this is the full comparison restricted to what can differ.
   */
  pushChanges(typeUrl: string, changed: readonly string[], removedNames: readonly string[]): void {
    const st = this.types.get(typeUrl);
    if (!st) return;
    const all = this.store.get(typeUrl);
    const resources = [];
    for (const n of changed) {
      const r = all.get(n);
      if (r && (st.wildcard || st.names.has(n)) && st.held.get(n) !== r.version) resources.push(r);
    }
    const removed = removedNames.filter((n) => st.held.has(n));
    if (resources.length || removed.length) this.send(typeUrl, st, resources, removed);
    else if (st.wildcard) st.held = this.store.versions(typeUrl); // equal already; share the store's
  }

  private send(typeUrl: string, st: TypeState, resources: Resource[], removed: string[]): void {
    const nonce = randomUUID();
    st.pending.add(nonce);
    // `held` is what the client will have once the responses queued so far arrive, in order. A
    // wildcard stream is sent every difference from the store (push), and from then on every
    // change (pushChanges), so it then holds exactly the store's versions.
    if (st.wildcard) st.held = this.store.versions(typeUrl);
    else
      st.held = st.held.withMutations((m) => {
        for (const r of resources) m.set(r.name, r.version);
        for (const n of removed) m.delete(n);
      });
    this.outbox.push({ nonce, msg: deltaResponse({ systemVersionInfo: String(this.store.generation), typeUrl, nonce, resources, removed }) });
    this.flush();
  }

  /**
   * Writes queued responses in order; a large one may wait for the gate, and the rest behind it.
   * A large one holds its slot until the client ACKs or NACKs it: only then has it surely left
   * this process (a write completes as soon as HTTP/2 has buffered it).
   */
  private flush(): void {
    while (!this.waiting && this.outbox.length) {
      const { nonce, msg } = this.outbox.shift()!;
      this.waiting = true;
      let later = false; // the gate called back after a wait: resume the queue from there
      this.gate.run(msg.length, (done) => {
        this.waiting = false;
        this.unacked.set(nonce, done);
        this.call.write(msg);
        if (later) this.flush();
      });
      later = true;
    }
  }

  /** The stream ended: nothing it sent will be acknowledged. */
  onClose(): void {
    for (const done of this.unacked.values()) done();
    this.unacked.clear();
  }
}
