// One record per proxied connection: Istio's connection metrics are opened when it starts and
// closed by a single guard on every exit path, so denials and failures are counted exactly like
// successes; one access-log line (src/telemetry/access-log.ts) is written when it ends.
import type { Socket } from 'node:net';
import type { Service, Workload } from '../../api/mesh.ts';
import type { Endpoint } from '../capture/backend.ts';
import type { AgentMetrics } from '../metrics/metrics.ts';
import { logConnection, type AccessLogSink } from '../../telemetry/access-log.ts';
import { elapsedMs, type Direction } from '../../telemetry/connection.ts';
import { known, type ConnectionFacts, type IstioTcpMetrics } from '../../telemetry/istio-tcp.ts';
import { formatAuthority } from '../../hbone/authority.ts';

/** Where a connection reports to: all a Connection takes from the agent. */
export interface ConnectionSinks {
  log: AccessLogSink;
  metrics: Pick<AgentMetrics, 'active' | 'connectionEnded'>;
  istio: IstioTcpMetrics;
  /** Where the access log is also exported (OTLP logs, --otlp-logs-endpoint); absent: the line only. */
  accessLogExport?: AccessLogSink;
  /** Connections not yet finished: a draining agent exits when it reaches zero. */
  live?: LiveConnections;
}

/** How many connections are open, and a wait for none (a draining agent's exit condition). */
export class LiveConnections {
  private n = 0;
  private waiters: (() => void)[] = [];

  get count(): number {
    return this.n;
  }

  opened(): void {
    this.n++;
  }

  closed(): void {
    if (--this.n > 0) return;
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Resolves once no connection is open (at once if none is). */
  idle(): Promise<void> {
    return this.n === 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }
}

export interface Outcome {
  /** Bytes from the client toward the destination, and back. */
  sent: number;
  received: number;
  error?: string;
  /** Istio response flag: DENY, CONNECT (upstream connect failure), TLS_FAILURE, NR (no route). */
  flag?: string;
  policy?: string;
  audit?: string[];
}

export class Connection {
  private readonly start = process.hrtime.bigint();
  private done = false;
  private opened = false;
  readonly src: string;
  dst?: Endpoint;
  hboneAddr?: string;
  /** Carried by the node-local fast path: both pods on this node, no HBONE. */
  nodeLocal = false;
  facts: ConnectionFacts;

  constructor(
    private readonly sinks: ConnectionSinks,
    readonly direction: Direction,
    readonly pod: { namespace: string; name: string },
    src: Socket | string,
  ) {
    this.src = typeof src === 'string' ? src : formatAuthority({ address: src.remoteAddress ?? '', port: src.remotePort ?? 0 });
    this.facts = { reporter: direction === 'outbound' ? 'source' : 'destination', mtls: false };
    sinks.metrics.active.inc({ direction });
    sinks.live?.opened();
  }

  /** What the decision found; metrics count the connection as opened from here on. */
  decided(f: { src?: Workload; dst?: Workload; service?: Service; srcPrincipal?: string; dstPrincipal?: string; mtls?: boolean }): void {
    Object.assign(this.facts, f);
    if (!this.opened) {
      this.opened = true;
      this.sinks.istio.series(this.facts).opened++;
    }
  }

  finish(o: Outcome): void {
    if (this.done) return;
    this.done = true;
    const { sinks } = this;
    sinks.metrics.active.dec({ direction: this.direction });
    sinks.live?.closed();
    if (!this.opened) this.decided({});
    const series = sinks.istio.series(this.facts, o.flag ?? '-');
    const labels = series.labels;
    series.closed++;
    // Istio's sense: received = request bytes (from the client), sent = response bytes.
    series.received += o.sent;
    series.sent += o.received;
    const f = this.facts;
    const transport = this.nodeLocal ? 'node_local' : f.mtls ? 'hbone' : 'tcp';
    sinks.metrics.connectionEnded(this.direction, transport, !o.error);
    logConnection(sinks.log, {
      direction: this.direction,
      pod: `${this.pod.namespace}/${this.pod.name}`,
      srcAddr: this.src,
      srcWorkload: f.src,
      srcIdentity: known(labels.source_principal),
      dstAddr: this.dst ? formatAuthority(this.dst) : undefined,
      hboneAddr: this.hboneAddr,
      service: f.service,
      dstWorkload: f.dst,
      dstIdentity: known(labels.destination_principal),
      transport,
      sent: o.sent,
      received: o.received,
      durationMs: elapsedMs(this.start),
      error: o.error,
      responseFlags: o.flag,
      policy: o.policy,
      audit: o.audit,
    }, sinks.accessLogExport);
  }
}
