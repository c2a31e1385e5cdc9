// A TCP port through the waypoint (the port's listener is a tcp_proxy, xds/compile.ts): decided at
// CONNECT (the listener's network filters, RBAC being Istio's L4 policy; then an endpoint of the
// cluster, round robin, only endpoints whose identity the mesh knows), then the upstream tunnel
// opened under the waypoint's identity before the client gets its 200, so a failure is the CONNECT's 503 (UH: no endpoint, UF: the tunnel failed) rather
// than a tunnel that opens and closes. Bytes are piped both ways with backpressure (nothing is
// buffered beyond the streams' windows), an end in one direction ends the other side's writing
// (half-close), and a reset or close of either side ends both. Counted in Istio's TCP series
// (reporter="waypoint"), opened at accept and closed with the bytes each way.
import type { Duplex } from 'node:stream';
import type { Service } from '../../api/mesh.ts';
import type { ConnectDecision } from '../../hbone/server/contract.ts';
import { HboneError } from '../../hbone/errors.ts';
import type { IstioTcpMetrics, ConnectionFacts } from '../../telemetry/istio-tcp.ts';
import type { MeshIndex } from '../mesh.ts';
import type { Endpoint, RoutingTable } from '../router/table.ts';
import type { Balancer } from '../upstream/balancer.ts';
import { openTunnel, type UpstreamOptions } from '../upstream/forward.ts';
import { ipOf } from '../../util/peer-ip.ts';
import { runNetworkFilters } from '../filters/chain.ts';

export interface TcpDeps {
  table: () => RoutingTable;
  mesh: () => MeshIndex;
  balancer: Balancer;
  unsupported: (cluster: string) => string | undefined;
  upstream: UpstreamOptions;
  metrics: IstioTcpMetrics;
  /** Every connection once it ends, for logs and tests. */
  onClose?: (c: TcpRecord) => void;
}

export interface TcpRecord {
  service: string;
  cluster: string;
  upstream?: Endpoint;
  flags: string;
  details?: string;
  /** Client to endpoint. */
  received: number;
  /** Endpoint to client. */
  sent: number;
}

export interface TcpTarget {
  peerPrincipal: string;
  peerAddress: string;
  service: Service;
  port: number;
  cluster: string;
  /** The port's listener (`host:port`): its network filters (RBAC) run before anything is dialled. */
  listener: string;
  /** The CONNECT authority `ip:port`. */
  destination: string;
}

/**
 * Whether a side that closed was reset rather than ended: no end of its readable, or an error (an
 * HTTP/2 stream reset after END_STREAM still ends its readable first, then errors).
 */
export const wasReset = (d: Duplex): boolean => !d.readableEnded || d.errored !== null || ((d as { rstCode?: number }).rstCode ?? 0) !== 0;

/** wasReset, plus 'aborted': an HTTP/2 stream whose session went ends with no error and rstCode 0, and only says so by 'aborted'. */
export function resetWatch(d: Duplex): () => boolean {
  let aborted = false;
  d.once('aborted', () => (aborted = true));
  return () => aborted || wasReset(d);
}


export class TcpRelays {
  private readonly live = new Set<Duplex>();

  constructor(private readonly d: TcpDeps) {}

  /** Connections relayed now (upstream tunnels held), for leak checks. */
  get size(): number {
    return this.live.size;
  }

  destroyAll(): void {
    for (const s of this.live) s.destroy();
  }

  /** The CONNECT's decision: refused with the reason, or accepted with the upstream already open. */
  async connect(t: TcpTarget): Promise<ConnectDecision> {
    const mesh = this.d.mesh();
    const facts: ConnectionFacts = { reporter: 'waypoint', src: mesh.workload(ipOf(t.peerAddress)), srcPrincipal: t.peerPrincipal, service: t.service, mtls: true };
    const refuse = (status: 401 | 503, flags: string, reason: string): ConnectDecision => {
      this.record(facts, { service: t.service.hostname, cluster: t.cluster, flags, details: reason, received: 0, sent: 0 });
      return { status, reason };
    };
    const table = this.d.table();
    const filters = table.filters?.get(t.listener)?.network;
    if (filters?.length) {
      const destinationIp = t.destination.slice(0, t.destination.lastIndexOf(':')).replace(/^\[|\]$/g, '');
      const refused = runNetworkFilters(filters, { peerPrincipal: t.peerPrincipal, peerIp: ipOf(t.peerAddress), peerAddress: t.peerAddress, destination: t.destination, destinationIp, port: t.port, service: t.service });
      if (refused) return refuse(401, refused.flags, `denied${refused.policy ? ` by ${refused.policy}` : ''}: ${refused.reason}`);
    }
    const c = table.clusters.get(t.cluster);
    if (!c) return refuse(503, 'NC', `cluster ${t.cluster} not found`);
    const why = this.d.unsupported(t.cluster);
    if (why) return refuse(503, 'UH', why);
    const endpoints = (table.endpoints.get(c.edsName) ?? []).filter((e) => mesh.identity(e.address) !== undefined);
    const endpoint = this.d.balancer.endpoint(t.cluster, endpoints);
    if (!endpoint) return refuse(503, 'UH', `cluster ${t.cluster}: no healthy endpoint`);
    const identity = mesh.identity(endpoint.address)!;
    Object.assign(facts, { dst: mesh.workload(endpoint.address), dstPrincipal: identity });
    let up: Duplex;
    try {
      up = await openTunnel(this.d.upstream, endpoint, identity, {});
    } catch (e) {
      const details = e instanceof HboneError ? `${e.kind}: ${e.message}` : (e as Error).message;
      return refuse(503, 'UF', details);
    }
    // The tunnel is handed over once the 200 is out; a client gone before that must not leave it open.
    this.live.add(up);
    const orphan = setTimeout(() => up.destroy(), 10_000).unref();
    up.once('close', () => this.live.delete(up));
    return {
      status: 200,
      acceptStream: (down) => {
        clearTimeout(orphan);
        this.relay(facts, t, endpoint, down, up);
      },
    };
  }

  private relay(facts: ConnectionFacts, t: TcpTarget, endpoint: Endpoint, down: Duplex, up: Duplex): void {
    this.d.metrics.series(facts).opened++;
    let received = 0;
    let sent = 0;
    let reset: string | undefined;
    down.on('data', (c: Buffer) => (received += c.length));
    up.on('data', (c: Buffer) => (sent += c.length));
    down.on('error', (e: Error) => (reset ??= `downstream: ${e.message}`));
    up.on('error', (e: Error) => (reset ??= `upstream: ${e.message}`));
    down.pipe(up);
    up.pipe(down);
    let closed = 0;
    // A side that was reset (resetWatch) takes the other down at once. One that ended
    // cleanly leaves the other to finish writing what is in flight (the pipe ends it).
    const downReset = resetWatch(down);
    const upReset = resetWatch(up);
    const onClose = (self: Duplex, other: Duplex, side: string) => () => {
      if ((self === up ? upReset() : downReset()) && !other.destroyed) {
        reset ??= `${side} reset`;
        other.destroy();
      }
      if (++closed < 2) return;
      this.record(facts, { service: t.service.hostname, cluster: t.cluster, upstream: endpoint, flags: reset?.startsWith('upstream') ? 'UR' : reset ? 'DC' : '-', details: reset, received, sent }, true);
    };
    down.once('close', onClose(down, up, 'downstream'));
    up.once('close', onClose(up, down, 'upstream'));
  }

  private record(facts: ConnectionFacts, r: TcpRecord, opened = false): void {
    const series = this.d.metrics.series(facts, r.flags);
    if (!opened) series.opened++;
    series.closed++;
    series.received += r.received;
    series.sent += r.sent;
    this.d.onClose?.(r);
  }
}
