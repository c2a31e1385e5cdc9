// Which cluster of a route and which endpoint of a cluster: weighted random over the route's
// clusters (as Envoy's weighted_clusters), round robin over a cluster's healthy endpoints. The
// only mutable routing state (the round-robin positions), kept apart from the immutable table.
import type { Endpoint, Route, WeightedCluster } from '../router/table.ts';

export class Balancer {
  private readonly next = new Map<string, number>();

  constructor(private readonly random: () => number = Math.random) {}

  cluster(route: Route): WeightedCluster {
    let r = Math.floor(this.random() * route.totalWeight);
    for (const c of route.clusters) {
      if (r < c.weight) return c;
      r -= c.weight;
    }
    return route.clusters[route.clusters.length - 1]!;
  }

  endpoint(cluster: string, endpoints: readonly Endpoint[]): Endpoint | undefined {
    if (!endpoints.length) return undefined;
    const i = (this.next.get(cluster) ?? 0) % endpoints.length;
    this.next.set(cluster, i + 1);
    return endpoints[i];
  }
}
