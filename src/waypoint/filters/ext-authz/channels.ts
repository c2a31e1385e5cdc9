// How the waypoint reaches a service its filters call (the external authorizer), by Envoy cluster
// name as the filter config names it: the cluster's endpoints from the routing table (EDS), one
// picked round robin; a mesh workload is reached over HBONE under the waypoint's identity, as its
// upstreams are (HTTP/2 on the waypoint's pooled sessions, or a tunnel per HTTP/1.1 exchange),
// anything else in plaintext (HTTP/2 sessions pooled alike, by a second H2Sessions over TCP). Calls in flight per cluster are bounded
// (Envoy's default circuit breaker, 1024 requests): past it a call fails at once instead of queueing.
import type { ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { MeshIndex } from '../../mesh.ts';
import type { Endpoint, RoutingTable } from '../../router/table.ts';
import { dialTcp, openTunnel, type UpstreamOptions } from '../../upstream/forward.ts';
import { H2Sessions } from '../../upstream/h2-sessions.ts';

export interface ChannelDeps {
  table: () => RoutingTable;
  mesh: () => MeshIndex;
  upstream: UpstreamOptions;
  h2: H2Sessions;
  /** Plaintext dialling (tests map addresses); default TCP. */
  dialPlain?: (address: string, port: number) => Promise<Duplex>;
  /** Calls in flight per cluster (default 1024). */
  maxInFlight?: number;
  /** Plaintext HTTP/2 sessions kept (default 64), each closed after idleMs without a stream (default 60 s). */
  maxPlainSessions?: number;
  idleMs?: number;
}

/** One endpoint of a cluster, and how to reach it. */
export interface ChannelTarget {
  cluster: string;
  endpoint: Endpoint;
  /** The SPIFFE id to expect over HBONE; absent: plaintext. */
  identity?: string;
  /** The cluster speaks HTTP/2 (for HTTP services; gRPC always does). */
  http2: boolean;
}

export class ServiceChannels {
  private readonly next = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();
  private readonly plain: H2Sessions;
  private closed = false;

  constructor(private readonly d: ChannelDeps) {
    const limits = { maxSessions: d.maxPlainSessions ?? 64, idleMs: d.idleMs ?? 60_000 };
    this.plain = new H2Sessions(d.upstream, limits, (e) => (d.dialPlain ?? dialTcp)(e.address, e.port));
  }

  /** The waypoint's SPIFFE id (what a called service sees as its peer). */
  get identity(): string {
    return this.d.upstream.identity;
  }

  /** Plaintext sessions held now, for leak checks. */
  get size(): number {
    return this.plain.size;
  }

  /**
   * Takes a place for one call to `cluster` and picks its endpoint; the caller releases the place.
   * Throws (the call's error) when the cluster is unknown, has no endpoint, or is at its bound.
   */
  acquire(cluster: string): { target: ChannelTarget; release: () => void } {
    const t = this.d.table();
    const c = t.clusters.get(cluster);
    if (!c) throw new Error(`cluster ${cluster} not found`);
    const endpoints = t.endpoints.get(c.edsName) ?? [];
    if (!endpoints.length) throw new Error(`cluster ${cluster}: no healthy upstream`);
    const n = this.inFlight.get(cluster) ?? 0;
    if (n >= (this.d.maxInFlight ?? 1024)) throw new Error(`cluster ${cluster}: too many calls in flight (overflow)`);
    this.inFlight.set(cluster, n + 1);
    const i = this.next.get(cluster) ?? 0;
    this.next.set(cluster, (i + 1) % endpoints.length);
    const endpoint = endpoints[i % endpoints.length]!;
    const identity = this.d.mesh().identity(endpoint.address);
    let released = false;
    return {
      target: { cluster, endpoint, ...(identity && { identity }), http2: c.http2 === true },
      release: () => {
        if (released) return;
        released = true;
        const left = (this.inFlight.get(cluster) ?? 1) - 1;
        if (left > 0) this.inFlight.set(cluster, left);
        else this.inFlight.delete(cluster);
      },
    };
  }

  /** An HTTP/2 session to the target: the waypoint's pooled HBONE one, or a pooled plaintext one. */
  session(t: ChannelTarget): Promise<ClientHttp2Session> {
    if (t.identity) return this.d.h2.get(t.endpoint, t.identity);
    if (this.closed) return Promise.reject(new Error('channels closed'));
    return this.plain.get(t.endpoint, '');
  }

  /** A byte stream to the target for one HTTP/1.1 exchange: an HBONE tunnel, or a TCP connection. */
  connect(t: ChannelTarget): Promise<Duplex> {
    if (t.identity) return openTunnel(this.d.upstream, t.endpoint, t.identity, {});
    return (this.d.dialPlain ?? dialTcp)(t.endpoint.address, t.endpoint.port);
  }

  close(): void {
    this.closed = true;
    this.plain.close(false);
  }
}
