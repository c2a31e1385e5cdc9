// Outbound decisions the relay may reuse (native/relay/express_out.h). When a captured connection's
// HBONE CONNECT is answered 200, the decision that sent it is granted to the relay for the listener
// it came in on: the next connection from the pod to the same original destination is opened on
// the same session by the relay thread, with no JavaScript turn before its first byte. Only a
// decision with one possible outcome is granted (a Service balanced over several endpoints is not:
// the relay would always pick the first one's session), and only under the generation of the state
// it read (inbound/grants.ts), so a policy or endpoint change ends every grant. The record kept per
// grant (its tag) is what the connections opened on it are logged and counted with.
import type { Workload } from '../../../api/mesh.ts';
import type { SpiffeId } from '../../../api/spiffe.ts';
import { relayAddon } from '../../../hbone/native/addon.ts';
import type { AcceptedFd } from '../../../hbone/native/listener.ts';
import type { OutboundReuse } from '../../../hbone/pool.ts';
import type { Endpoint, PodCaptureHandle } from '../../capture/backend.ts';
import type { OutboundPlan } from './plan.ts';

export type HbonePlan = Extract<OutboundPlan, { kind: 'hbone' }>;

/** What a granted decision found: the record of each connection opened on it. */
export interface GrantedDecision {
  plan: HbonePlan;
  src?: Workload;
  srcId: SpiffeId;
  srcIp: string;
  /** `forwarded` is [0] + the app's source port + [1]. */
  forwarded: [string, string];
  /** The CONNECT's other fixed headers (baggage), name/value flat. */
  headers: string[];
}

/**
 * Records kept, of the current generation only: enough for every destination of every pod on a
 * busy node; past it the oldest go, and a connection on their grant is recorded from the state as
 * it is then.
 */
const MAX_RECORDS = 8192;

export class OutboundGrants {
  private nextTag = 1;
  private readonly records = new Map<number, GrantedDecision>();
  /** Listeners the relay looks connections up on, and the map it was given. */
  private readonly enabled = new Set<number>();
  private mapFd?: number;
  private generation?: number;

  /**
   * The grant to ask for with this decision's CONNECT, or undefined when it cannot be reused:
   * not accepted on the relay thread, no eBPF capture, or a choice among several outcomes.
   */
  offer(client: AcceptedFd, capture: Pick<PodCaptureHandle, 'originalDstSource'> | undefined, orig: Endpoint, generation: number | undefined, d: GrantedDecision, choices: number): OutboundReuse | undefined {
    if (generation === undefined || choices !== 1 || !client.listener || !capture?.originalDstSource) return undefined;
    if (!this.enabled.has(client.listener)) {
      const src = capture.originalDstSource();
      if (this.mapFd !== src.mapFd) {
        relayAddon().outboundMap(src.mapFd);
        this.mapFd = src.mapFd;
      }
      relayAddon().outboundExpress(client.listener, src.netnsCookie);
      this.enabled.add(client.listener);
    }
    if (generation !== this.generation) {
      // Older grants no longer match in the relay: their records would only pin old state.
      this.records.clear();
      this.generation = generation;
    }
    const tag = this.nextTag++;
    this.records.set(tag, d);
    if (this.records.size > MAX_RECORDS) this.records.delete(this.records.keys().next().value!);
    // The relay makes a new traceparent per connection.
    return { listener: client.listener, orig, generation, tag, forwardedPrefix: d.forwarded[0], forwardedSuffix: d.forwarded[1], headers: d.headers };
  }

  record(tag: number): GrantedDecision | undefined {
    return this.records.get(tag);
  }
}
