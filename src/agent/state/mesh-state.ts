// An immutable snapshot of what the control plane told the agent: workloads by uid and address,
// services by hostname and VIP, authorization policies. Proxies take the current snapshot when a
// connection starts, so an update is never seen half-applied.
import type { AuthorizationPolicy, Service, Workload } from '../../api/mesh.ts';

export class MeshState {
  readonly workloadsByIp = new Map<string, Workload>();
  readonly servicesByVip = new Map<string, Service>();
  /** "namespace/hostname" -> workloads backing it. */
  readonly endpoints = new Map<string, Workload[]>();

  constructor(
    readonly workloads: ReadonlyMap<string, Workload>,
    readonly services: ReadonlyMap<string, Service>,
    readonly policies: ReadonlyMap<string, AuthorizationPolicy>,
    readonly version = 0,
  ) {
    for (const w of workloads.values()) {
      for (const a of w.addresses) this.workloadsByIp.set(a, w);
      for (const key of Object.keys(w.services)) {
        const list = this.endpoints.get(key) ?? [];
        list.push(w);
        this.endpoints.set(key, list);
      }
    }
    for (const s of services.values()) for (const a of s.addresses) this.servicesByVip.set(a, s);
  }

  static empty(): MeshState {
    return new MeshState(new Map(), new Map(), new Map());
  }

  /** A copy with some resources replaced or removed. */
  with(changes: {
    workloads?: [string, Workload | undefined][];
    services?: [string, Service | undefined][];
    policies?: [string, AuthorizationPolicy | undefined][];
  }): MeshState {
    const apply = <T>(base: ReadonlyMap<string, T>, ch?: [string, T | undefined][]) => {
      if (!ch?.length) return base;
      const m = new Map(base);
      for (const [k, v] of ch) {
        if (v === undefined) m.delete(k);
        else m.set(k, v);
      }
      return m;
    };
    return new MeshState(apply(this.workloads, changes.workloads), apply(this.services, changes.services), apply(this.policies, changes.policies), this.version + 1);
  }
}
