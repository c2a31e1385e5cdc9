// The agent's Prometheus metrics (prom-client), served on :15020/metrics. Capture counters live in
// BPF maps (or iptables rule counters) and are read at scrape time, never on the data path.
// Istio's istio_tcp_* series, which any proxy exports, are in src/telemetry/istio-tcp.ts.
import { Counter, Gauge, Registry } from 'prom-client';
import type { Direction, Transport } from '../../telemetry/connection.ts';
import type { OtlpLogsStats } from '../../telemetry/otlp-logs.ts';
import { registerHealthMetrics } from '../../util/metrics.ts';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly enrolledPods = new Gauge({ name: 'weft_agent_enrolled_pods', help: 'Pods whose traffic this agent captures', registers: [this.registry] });
  readonly enrollments = new Counter({
    name: 'weft_agent_enrollments_total',
    help: 'Enrollment requests by operation and result',
    labelNames: ['operation', 'result'] as const,
    registers: [this.registry],
  });
  readonly active = new Gauge({ name: 'weft_agent_active_connections', help: 'Connections open through the agent', labelNames: ['direction'] as const, registers: [this.registry] });

  /** Connections that ended, by direction|protocol|result: plain additions, handed over at scrape time. */
  private readonly ended = new Map<string, number>();

  /** Connections the relay thread opened on a decision granted to it, by direction. */
  private readonly reused = { inbound: 0, outbound: 0 };

  /** A connection the relay opened on a granted decision (inbound/grants.ts, outbound/grants.ts). */
  reusedDecision(direction: Direction): void {
    this.reused[direction]++;
  }

  /** Read at scrape time: the capture counters of every enrolled pod. */
  captureCounters: () => { namespace: string; pod: string; outbound: number; inbound: number }[] = () => [];

  /** Read at scrape time: dial sockets made ahead of time in pod netns and not yet used. */
  dialSocketsReady: () => number = () => 0;

  /** Read at scrape time: the OTLP access-log exporter's counts, when one is configured. */
  accessLogExport: () => OtlpLogsStats | undefined = () => undefined;

  /** One per access-log line (Connection.finish), so the two always agree. */
  connectionEnded(direction: Direction, protocol: Transport, ok: boolean): void {
    const key = `${direction}|${protocol}|${ok ? 'success' : 'failure'}`;
    this.ended.set(key, (this.ended.get(key) ?? 0) + 1);
  }

  constructor(mode: string) {
    const counters = () => this.captureCounters();
    const ended = this.ended;
    const exported = () => this.accessLogExport();
    const ready = () => this.dialSocketsReady();
    registerHealthMetrics(this.registry);
    new Gauge({ name: 'weft_agent_info', help: 'Agent build and capture mode', labelNames: ['capture_mode'] as const, registers: [this.registry] }).set({ capture_mode: mode }, 1);
    // The node's own count of what it carried, whatever reached it: connections the kernel
    // captured and those that came to 15008 as HBONE, which no capture counter sees.
    new Counter({
      name: 'weft_agent_connections_total',
      help: 'Connections the agent proxied, counted when they end (one access-log line each), by direction, protocol (hbone, tcp, node_local) and result',
      labelNames: ['direction', 'protocol', 'result'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [key, n] of ended) {
          const [direction, protocol, result] = key.split('|') as [string, string, string];
          this.inc({ direction, protocol, result }, n);
        }
      },
    });
    const reused = this.reused;
    new Counter({
      name: 'weft_agent_reused_decisions_total',
      help: 'Connections the relay thread opened on a decision JavaScript granted it for the same destination (native data path), by direction',
      labelNames: ['direction'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const direction of ['inbound', 'outbound'] as const) this.inc({ direction }, reused[direction]);
      },
    });
    // The OTLP copy of the access log (--otlp-logs-endpoint): no series unless it is configured.
    new Counter({
      name: 'weft_agent_access_log_export_records_total',
      help: 'Access-log records exported over OTLP logs, by result: exported, or dropped because the queue was full (queue_full) or the collector failed, refused or timed out (export_failed)',
      labelNames: ['result'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        const s = exported();
        if (!s) return;
        this.inc({ result: 'exported' }, s.exported);
        this.inc({ result: 'queue_full' }, s.dropped.queue_full);
        this.inc({ result: 'export_failed' }, s.dropped.export_failed);
      },
    });
    new Gauge({
      name: 'weft_agent_access_log_export_queued',
      help: 'Access-log records held for OTLP export (queued or being sent); capped by --otlp-logs-max-queue',
      registers: [this.registry],
      collect() {
        this.reset();
        const s = exported();
        if (s) this.set(s.held);
      },
    });
    // Sockets the agent holds that no connection uses yet: an fd count minus these is what
    // connections hold (each pod's pool refills in batches of up to 128 per family).
    new Gauge({
      name: 'weft_agent_dial_sockets_ready',
      help: 'Unconnected sockets made ahead of time in enrolled pods\' network namespaces for upstream dials, not yet used',
      registers: [this.registry],
      collect() {
        this.set(ready());
      },
    });
    new Counter({
      name: 'weft_pod_captured_connections_total',
      help: 'TCP connections captured in the kernel for each enrolled pod, by direction',
      labelNames: ['namespace', 'pod', 'direction'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of counters()) {
          this.inc({ namespace: c.namespace, pod: c.pod, direction: 'outbound' }, c.outbound);
          this.inc({ namespace: c.namespace, pod: c.pod, direction: 'inbound' }, c.inbound);
        }
      },
    });
  }
}
