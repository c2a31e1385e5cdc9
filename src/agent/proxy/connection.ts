// One object per proxied connection: opened when accepted, closed by a single guard on every exit
// path, so failures are counted and logged exactly like successes (one access-log line each).
import type { Logger } from 'pino';
import type { Socket } from 'node:net';
import type { Endpoint } from '../capture/backend.ts';
import type { AgentMetrics, Direction } from '../metrics/metrics.ts';

export interface ConnContext {
  log: Logger;
  metrics: AgentMetrics;
}

export class Connection {
  private readonly start = process.hrtime.bigint();
  private done = false;
  /** Read at accept: a closed socket no longer knows its peer. */
  private readonly src: string;
  dst?: Endpoint;

  constructor(
    private readonly ctx: ConnContext,
    readonly direction: Direction,
    readonly pod: { namespace: string; name: string },
    readonly client: Socket,
  ) {
    this.src = `${client.remoteAddress}:${client.remotePort}`;
    ctx.metrics.active.inc({ direction });
  }

  /** The guard: call on every exit path; only the first call counts. */
  finish(result: { sent: number; received: number; error?: string }): void {
    if (this.done) return;
    this.done = true;
    const { metrics, log } = this.ctx;
    metrics.active.dec({ direction: this.direction });
    metrics.proxied.inc({ direction: this.direction, result: result.error ? 'error' : 'ok' });
    metrics.proxiedBytes.inc({ direction: this.direction, flow: 'sent' }, result.sent);
    metrics.proxiedBytes.inc({ direction: this.direction, flow: 'received' }, result.received);
    const entry = {
      direction: this.direction,
      'src.addr': this.src,
      'dst.addr': this.dst ? `${this.dst.address}:${this.dst.port}` : undefined,
      'pod': `${this.pod.namespace}/${this.pod.name}`,
      bytes_sent: result.sent,
      bytes_recv: result.received,
      duration_ms: Number(process.hrtime.bigint() - this.start) / 1e6,
      ...(result.error ? { error: result.error } : {}),
    };
    if (result.error) log.warn(entry, 'connection failed');
    else log.info(entry, 'connection complete');
  }
}
