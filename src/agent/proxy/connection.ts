// One record per proxied connection: Istio's connection metrics are opened when it starts and
// closed by a single guard on every exit path, so denials and failures are counted exactly like
// successes; one access-log line is written when it ends.
import type { Socket } from 'node:net';
import type { Service, Workload } from '../../api/mesh.ts';
import type { Endpoint } from '../capture/backend.ts';
import type { ConnectionFacts } from '../metrics/istio.ts';
import type { Direction } from '../metrics/metrics.ts';
import type { ProxyContext } from './context.ts';
import { formatAuthority } from '../../hbone/authority.ts';

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
    private readonly ctx: ProxyContext,
    readonly direction: Direction,
    readonly pod: { namespace: string; name: string },
    src: Socket | string,
  ) {
    this.src = typeof src === 'string' ? src : formatAuthority({ address: src.remoteAddress ?? '', port: src.remotePort ?? 0 });
    this.facts = { reporter: direction === 'outbound' ? 'source' : 'destination', mtls: false };
    ctx.metrics.active.inc({ direction });
  }

  /** What the decision found; metrics count the connection as opened from here on. */
  decided(f: { src?: Workload; dst?: Workload; service?: Service; srcPrincipal?: string; dstPrincipal?: string; mtls?: boolean }): void {
    Object.assign(this.facts, f);
    if (!this.opened) {
      this.opened = true;
      this.ctx.istio.series(this.facts).opened++;
    }
  }

  finish(o: Outcome): void {
    if (this.done) return;
    this.done = true;
    const { ctx } = this;
    ctx.metrics.active.dec({ direction: this.direction });
    if (!this.opened) this.decided({});
    const series = ctx.istio.series(this.facts, o.flag ?? '-');
    const labels = series.labels;
    series.closed++;
    // Istio's sense: received = request bytes (from the client), sent = response bytes.
    series.received += o.sent;
    series.sent += o.received;
    const f = this.facts;
    ctx.metrics.connectionEnded(this.direction, this.nodeLocal ? 'node_local' : f.mtls ? 'hbone' : 'tcp', !o.error);
    const entry = {
      direction: this.direction,
      pod: `${this.pod.namespace}/${this.pod.name}`,
      'src.addr': this.src,
      'src.workload': f.src?.name,
      'src.namespace': f.src?.namespace,
      'src.identity': labels.source_principal !== 'unknown' ? labels.source_principal : undefined,
      'dst.addr': this.dst ? formatAuthority(this.dst) : undefined,
      'dst.hbone_addr': this.hboneAddr,
      ...(this.nodeLocal ? { node_local: true } : {}),
      'dst.service': f.service?.hostname,
      'dst.workload': f.dst?.name,
      'dst.namespace': f.dst?.namespace,
      'dst.identity': labels.destination_principal !== 'unknown' ? labels.destination_principal : undefined,
      protocol: this.nodeLocal ? 'node-local' : f.mtls ? 'HBONE' : 'TCP',
      bytes_sent: o.sent,
      bytes_recv: o.received,
      duration_ms: Math.round(Number(process.hrtime.bigint() - this.start) / 1e4) / 100,
      ...(o.error ? { error: o.error, response_flags: o.flag } : {}),
      ...(o.policy ? { policy: o.policy } : {}),
      ...(o.audit?.length ? { audit: o.audit } : {}),
    };
    if (o.error) ctx.log.warn(entry, 'connection failed');
    else ctx.log.info(entry, 'connection complete');
  }
}
