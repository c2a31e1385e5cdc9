// Delta ADS (envoy.service.discovery.v3 DeltaAggregatedResources) over the resource store, for
// every type it holds: the workload API (node agents) and Envoy's LDS/RDS/CDS/EDS (waypoints).
// Per stream and type: what the client subscribed to (a wildcard, or names: an empty first
// request is a wildcard except for the named types RDS and EDS, subscriptions.ts), which version
// of each resource it holds (from our sends, or its initial_resource_versions after a reconnect),
// and the responses still awaiting ACK, by nonce. Only resources the client lacks or holds in
// another version are sent, and removed_resources names what it holds that is gone.
// A NACK keeps the client on what it had: it is logged with its reason and counted, and the
// resources it refused are remembered as rejected (config_dump) until a newer version is ACKed.
// The refused versions are not sent again on this stream: the client is taken to hold them, as
// Envoy expects, so only a change of the resource (or a new stream) sends it again.
// A reply naming a nonce not awaiting an answer (stale, or garbage) is ignored, though a
// subscription change it carries is applied. Subscriptions are bounded (StreamLimits).
import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { Map as PMap } from 'immutable';
import type { Logger } from 'pino';
import { deltaResponse } from './delta-wire.ts';
import type { Resource, ResourceStore } from './resources.ts';
import { SendGate } from './send-gate.ts';
import { StreamSet, type Authorize } from './streams.ts';
import { checkNames, checkTypes, DEFAULT_LIMITS, isWildcard, reportNack, type AdsEvents, type StreamLimits } from './subscriptions.ts';

interface DeltaRequest {
  node?: { id?: string; cluster?: string; metadata?: unknown };
  typeUrl: string;
  resourceNamesSubscribe?: string[];
  resourceNamesUnsubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
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
  /** nonce -> the resources that response carried, oldest first; bounded by StreamLimits.pending. */
  pending: Map<string, readonly Resource[]>;
  /** name -> version the client refused */
  rejected: Map<string, string>;
  nacks: number;
}

export type DeltaAdsEvents = AdsEvents;

export interface DeltaAdsOptions {
  limits?: Partial<StreamLimits>;
}

export class DeltaAdsServer {
  private readonly set: StreamSet<Stream, DeltaRequest>;
  private readonly gate = new SendGate();
  private readonly limits: StreamLimits;
  /** NACKs received since start, for tests and config dumps. */
  nacks = 0;
  private get streams() {
    return this.set.streams;
  }

  constructor(
    private readonly store: ResourceStore,
    private readonly log: Logger,
    private readonly events: DeltaAdsEvents = {},
    o: DeltaAdsOptions = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...o.limits };
    this.set = new StreamSet(events.onConnect);
    store.on('change', (typeUrl: string, changed: string[], removed: string[]) => {
      for (const s of this.streams) s.pushChanges(typeUrl, changed, removed);
    });
  }

  get connected(): number {
    return this.streams.size;
  }

  /** Ends every stream with UNAVAILABLE, spread over `spreadMs` (StreamSet.drain); new ones are ended at once. */
  drain(spreadMs: number): Promise<void> {
    return this.set.drain(spreadMs);
  }

  /** Node ids of connected clients and how many resources of each type they hold, for config_dump and tests. */
  clients(): { node: string; types: Record<string, number> }[] {
    return [...this.streams].map((s) => ({ node: s.node, types: Object.fromEntries([...s.types].map(([t, st]) => [t, st.held.size])) }));
  }

  /** What each connected client subscribed to and refused, by type. */
  subscriptions(): { node: string; types: Record<string, { subscribed: string[] | '*'; held: number; pending: number; rejected: Record<string, string>; nacks: number }> }[] {
    return [...this.streams].map((s) => ({
      node: s.node,
      types: Object.fromEntries(
        [...s.types].map(([t, st]) => [t, { subscribed: st.wildcard ? '*' : [...st.names], held: st.held.size, pending: st.pending.size, rejected: Object.fromEntries(st.rejected), nacks: st.nacks }]),
      ),
    }));
  }

  /** The grpc handler for DeltaAggregatedResources. `authorize` may reject a stream before use. */
  handler(authorize?: Authorize) {
    const events: DeltaAdsEvents = {
      ...this.events,
      onNack: (t, n, r) => {
        this.nacks++;
        this.events.onNack?.(t, n, r);
      },
    };
    return this.set.handler((call) => new Stream(call, this.store, this.log, events, this.gate, this.limits), authorize);
  }
}

class Stream {
  readonly types = new Map<string, TypeState>();
  node = 'unknown';
  private readonly outbox: { typeUrl: string; nonce: string; msg: Buffer }[] = [];
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
    private readonly limits: StreamLimits,
  ) {}

  onRequest(req: DeltaRequest): void {
    if (req.node?.id) this.node = req.node.id;
    const typeUrl = req.typeUrl ?? '';
    const subscribe = req.resourceNamesSubscribe ?? [];
    const unsubscribe = req.resourceNamesUnsubscribe ?? [];
    let st = this.types.get(typeUrl);
    // A nonce on the first request of a type refers to an earlier stream: nothing to acknowledge.
    if (st && req.responseNonce) this.answer(typeUrl, st, req.responseNonce, req.errorDetail?.message);
    const first = !st;
    if (!st) {
      checkTypes(this.limits, this.types.size + 1);
      const initial = Object.entries(req.initialResourceVersions ?? {});
      checkNames(this.limits, typeUrl, initial.length, 'hold');
      st = { wildcard: isWildcard(typeUrl, subscribe), names: new Set(), held: PMap(initial), pending: new Map(), rejected: new Map(), nacks: 0 };
      this.types.set(typeUrl, st);
    } else if (!subscribe.length && !unsubscribe.length) return; // an ACK or NACK only
    checkNames(this.limits, typeUrl, st.names.size + subscribe.length);
    const wildcard = st.wildcard;
    const asked: string[] = [];
    const dropped: string[] = [];
    for (const n of subscribe) {
      if (n === '*') st.wildcard = true;
      else if (!st.names.has(n)) {
        st.names.add(n);
        asked.push(n);
      }
    }
    for (const n of unsubscribe) {
      if (n === '*') st.wildcard = false;
      else if (st.names.delete(n)) dropped.push(n);
    }
    this.push(typeUrl, st, { first, full: first || st.wildcard !== wildcard, asked, dropped });
  }

  /** The client's ACK or NACK of a response; a nonce not awaiting one is ignored. */
  private answer(typeUrl: string, st: TypeState, nonce: string, nack: string | undefined): void {
    const sent = st.pending.get(nonce);
    if (!sent) return; // stale (superseded or evicted), or never ours
    st.pending.delete(nonce);
    this.release(nonce);
    if (nack) {
      st.nacks++;
      for (const r of sent) st.rejected.set(r.name, r.version);
      reportNack(this.log, this.events, { node: this.node, typeUrl, reason: nack, rejected: sent.map((r) => r.name) });
    } else {
      for (const r of sent) st.rejected.delete(r.name);
      this.events.onAck?.(typeUrl, this.node);
    }
  }

  private release(nonce: string): void {
    this.unacked.get(nonce)?.();
    this.unacked.delete(nonce);
  }

  /**
   * Sends what this client lacks or holds in another version, and what it holds that is gone or no
   * longer subscribed: comparing everything subscribed when the subscription is new or its
   * wildcard changed, otherwise only the names the request added or dropped (so a client adding
   * names one request at a time costs what it adds). The first request of a type is always
   * answered, so the client knows what the server has even when it is nothing new.
   */
  private push(typeUrl: string, st: TypeState, o: { first: boolean; full: boolean; asked: readonly string[]; dropped: readonly string[] }): void {
    const all = this.store.get(typeUrl);
    const wanted = (n: string) => st.wildcard || st.names.has(n);
    const asked = o.asked.filter(wanted); // not dropped again by the same request
    const resources: Resource[] = [];
    let removed: string[];
    if (o.full) {
      if (st.wildcard) {
        for (const r of all.values()) if (st.held.get(r.name) !== r.version) resources.push(r);
      } else
        for (const n of st.names) {
          const r = all.get(n);
          if (r && st.held.get(n) !== r.version) resources.push(r);
        }
      removed = [...st.held.keys()].filter((n) => !all.has(n) || !wanted(n));
    } else {
      for (const n of asked) {
        const r = all.get(n);
        if (r && st.held.get(n) !== r.version) resources.push(r);
      }
      removed = o.dropped.filter((n) => st.held.has(n) && !wanted(n));
    }
    // Names just asked for that do not exist are reported removed, so the client need not wait for them.
    for (const n of asked) if (!all.has(n) && !st.held.has(n)) removed.push(n);
    if (!resources.length && !removed.length && !o.first) return;
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
    st.pending.set(nonce, resources);
    if (st.pending.size > this.limits.pending) {
      // A client this far behind (or not answering): its oldest response no longer awaits an answer.
      const oldest = st.pending.keys().next().value!;
      st.pending.delete(oldest);
      this.release(oldest);
    }
    for (const n of removed) st.rejected.delete(n);
    // `held` is what the client will have once the responses queued so far arrive, in order. A
    // wildcard stream is sent every difference from the store (push), and from then on every
    // change (pushChanges), so it then holds exactly the store's versions.
    if (st.wildcard) st.held = this.store.versions(typeUrl);
    else
      st.held = st.held.withMutations((m) => {
        for (const r of resources) m.set(r.name, r.version);
        for (const n of removed) m.delete(n);
      });
    this.outbox.push({ typeUrl, nonce, msg: deltaResponse({ systemVersionInfo: String(this.store.generation), typeUrl, nonce, resources, removed }) });
    this.flush();
  }

  /**
   * Writes queued responses in order; a large one may wait for the gate, and the rest behind it.
   * A large one holds its slot until the client ACKs or NACKs it: only then has it surely left
   * this process (a write completes as soon as HTTP/2 has buffered it).
   */
  private flush(): void {
    while (!this.waiting && this.outbox.length) {
      const { typeUrl, nonce, msg } = this.outbox.shift()!;
      this.waiting = true;
      let later = false; // the gate called back after a wait: resume the queue from there
      this.gate.run(msg.length, (done) => {
        this.waiting = false;
        // No longer awaited (evicted while it waited for the gate): no answer will free the slot.
        if (this.types.get(typeUrl)?.pending.has(nonce)) this.unacked.set(nonce, done);
        else done();
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
