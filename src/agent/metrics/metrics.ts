// The agent's Prometheus metrics (prom-client), served on :15020/metrics. Capture counters live in
// BPF maps (or iptables rule counters) and are read at scrape time, never on the data path.
import { Counter, Gauge, Registry } from 'prom-client';
import { registerHealthMetrics } from '../../util/metrics.ts';

export type Direction = 'outbound' | 'inbound';

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

  /** Read at scrape time: the capture counters of every enrolled pod. */
  captureCounters: () => { namespace: string; pod: string; outbound: number; inbound: number }[] = () => [];

  constructor(mode: string) {
    const counters = () => this.captureCounters();
    registerHealthMetrics(this.registry);
    new Gauge({ name: 'weft_agent_info', help: 'Agent build and capture mode', labelNames: ['capture_mode'] as const, registers: [this.registry] }).set({ capture_mode: mode }, 1);
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
