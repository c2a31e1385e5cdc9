// Which cluster of a route and which endpoint of a cluster, as Envoy picks them: weighted random
// over the route's clusters (weighted_clusters); within a cluster its lb policy (round robin,
// random, least request by power of two choices over active requests, ring hash, Maglev) over the
// endpoints outlier detection has not ejected (all of them when fewer than the panic threshold
// remain healthy). The mutable state (positions, active requests, rings, ejections, circuit
// breakers) is kept per cluster name, apart from the immutable table, and survives table swaps:
// each call takes the cluster's current config.
import type { Cluster, Endpoint, Route, WeightedCluster } from '../router/table.ts';
import { CircuitBreaker, type Admission } from './circuit.ts';
import { endpointKey, maglev, ringHash, type HashTable } from './hash.ts';
import { OutlierDetector } from './outlier.ts';

interface ClusterState {
  rr: number;
  /** Requests in flight per endpoint key (least request). */
  active: Map<string, number>;
  ring?: { signature: string; table: HashTable };
  outlier?: OutlierDetector;
  circuit: CircuitBreaker;
}

export class Balancer {
  private readonly next = new Map<string, number>();
  private readonly states = new Map<string, ClusterState>();

  constructor(
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {}

  cluster(route: Route): WeightedCluster {
    let r = Math.floor(this.random() * route.totalWeight);
    for (const c of route.clusters) {
      if (r < c.weight) return c;
      r -= c.weight;
    }
    return route.clusters[route.clusters.length - 1]!;
  }

  /** Round robin by cluster name alone (kept for callers without the compiled cluster). */
  endpoint(cluster: string, endpoints: readonly Endpoint[]): Endpoint | undefined {
    if (!endpoints.length) return undefined;
    const i = (this.next.get(cluster) ?? 0) % endpoints.length;
    this.next.set(cluster, i + 1);
    return endpoints[i];
  }

  /**
   * An endpoint of `cluster` by its policy, or undefined when none is usable. `hash` is the
   * request's (consistent-hash clusters; absent: a random one, as Envoy); `exclude` holds endpoint
   * keys (`address:port`) not to pick again, e.g. those a retry already tried. The pick counts as a
   * request in flight until onResult().
   */
  pick(cluster: Cluster, endpoints: readonly Endpoint[], hash?: number, exclude?: ReadonlySet<string>): Endpoint | undefined {
    if (!endpoints.length) return undefined;
    const s = this.state(cluster);
    let usable = endpoints;
    if (cluster.outlier) {
      s.outlier ??= new OutlierDetector(this.now, this.random, cluster.outlier.intervalMs);
      const ejected = s.outlier.ejected(cluster.outlier, endpoints.map(endpointKey));
      if (ejected.size) {
        const healthy = endpoints.filter((e) => !ejected.has(endpointKey(e)));
        // Below the panic threshold Envoy balances over every host, ejected or not.
        const panic = (100 * healthy.length) / endpoints.length < (cluster.panicThreshold ?? 50);
        usable = panic ? endpoints : healthy;
      }
    }
    if (exclude?.size) {
      const rest = usable.filter((e) => !exclude.has(endpointKey(e)));
      if (rest.length) usable = rest; // every host tried: Envoy's retry host predicate gives up and reuses one
    }
    if (!usable.length) return undefined;
    const chosen = this.choose(cluster, s, usable, hash);
    const key = endpointKey(chosen);
    s.active.set(key, (s.active.get(key) ?? 0) + 1);
    return chosen;
  }

  /**
   * The outcome of a request sent to (or meant for) `endpoint`: the upstream's status, or what the
   * waypoint answered for it (503 connect failure or reset, 504 timeout); 0 when it proves nothing
   * about the endpoint (the client went away, it never left). Ends the pick's request in flight.
   */
  onResult(cluster: Cluster, endpoint: Endpoint, status: number): void {
    const s = this.states.get(cluster.name);
    if (!s) return;
    const key = endpointKey(endpoint);
    const n = (s.active.get(key) ?? 0) - 1;
    if (n > 0) s.active.set(key, n);
    else s.active.delete(key);
    if (cluster.outlier && s.outlier) s.outlier.onResult(cluster.outlier, key, status);
  }

  /** A place for one request under the cluster's circuit breakers. */
  admit(cluster: Cluster): Admission {
    return this.state(cluster).circuit.admit(cluster.circuit);
  }

  /** A retry's place under the cluster's max_retries: the function ending it, or undefined when spent. */
  retry(cluster: Cluster): (() => void) | undefined {
    return this.state(cluster).circuit.retry(cluster.circuit);
  }

  /** Ejections of an endpoint so far (tests, config dumps). */
  ejections(cluster: string, endpoint: Endpoint): number {
    return this.states.get(cluster)?.outlier?.ejections(endpointKey(endpoint)) ?? 0;
  }

  /** Requests in flight and pending for a cluster. */
  circuitStats(cluster: string): { connections: number; requests: number; pending: number } {
    return this.states.get(cluster)?.circuit.stats() ?? { connections: 0, requests: 0, pending: 0 };
  }

  private state(cluster: Cluster): ClusterState {
    let s = this.states.get(cluster.name);
    if (!s) this.states.set(cluster.name, (s = { rr: 0, active: new Map(), circuit: new CircuitBreaker() }));
    return s;
  }

  private choose(cluster: Cluster, s: ClusterState, endpoints: readonly Endpoint[], hash: number | undefined): Endpoint {
    const lb = cluster.lb ?? { kind: 'ROUND_ROBIN' };
    const n = endpoints.length;
    const rand = (k: number) => Math.min(k - 1, Math.floor(this.random() * k));
    switch (lb.kind) {
      case 'RANDOM':
        return endpoints[rand(n)]!;
      case 'LEAST_REQUEST': {
        // Power of k choices (k = choice_count, 2 by default): the least loaded of k random picks.
        let best = endpoints[rand(n)]!;
        for (let i = 1; i < lb.choiceCount; i++) {
          const e = endpoints[rand(n)]!;
          if ((s.active.get(endpointKey(e)) ?? 0) < (s.active.get(endpointKey(best)) ?? 0)) best = e;
        }
        return best;
      }
      case 'RING_HASH':
      case 'MAGLEV': {
        const signature = `${JSON.stringify(lb)}|${endpoints.map(endpointKey).join(',')}`;
        if (s.ring?.signature !== signature)
          s.ring = { signature, table: lb.kind === 'MAGLEV' ? maglev(endpoints, lb.tableSize) : ringHash(endpoints, lb.minimumRingSize, lb.maximumRingSize) };
        const h = hash ?? Math.floor(this.random() * 2 ** 32);
        return endpoints[s.ring.table.lookup(h >>> 0)]!;
      }
      default: {
        const i = s.rr % n;
        s.rr = i + 1;
        return endpoints[i]!;
      }
    }
  }
}
