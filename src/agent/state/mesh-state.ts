// An immutable snapshot of what the control plane told the agent: workloads by uid and address,
// services by hostname and VIP, authorization policies. Proxies take the current snapshot when a
// connection starts, so an update is never seen half-applied.
//
// Snapshots are persistent maps (Immutable.js): a new snapshot shares everything an update did not
// touch, so one changed workload costs O(log n), not a copy of 10,000 entries and their indexes.
import { Map as PMap } from 'immutable';
import type { AuthorizationPolicy, Service, Workload } from '../../api/mesh.ts';

type Change<T> = [string, T | undefined][];

export class MeshState {
  private constructor(
    readonly workloads: PMap<string, Workload>,
    readonly services: PMap<string, Service>,
    readonly policies: PMap<string, AuthorizationPolicy>,
    readonly workloadsByIp: PMap<string, Workload>,
    readonly servicesByVip: PMap<string, Service>,
    /** "namespace/hostname" -> workloads backing it. */
    readonly endpoints: PMap<string, readonly Workload[]>,
    readonly version: number,
  ) {}

  static empty(): MeshState {
    return new MeshState(PMap(), PMap(), PMap(), PMap(), PMap(), PMap(), 0);
  }

  /** A new snapshot with some resources replaced (value) or removed (undefined). */
  with(changes: { workloads?: Change<Workload>; services?: Change<Service>; policies?: Change<AuthorizationPolicy> }): MeshState {
    let { workloads, workloadsByIp, endpoints, services, servicesByVip, policies } = this;
    if (changes.workloads?.length) {
      const eps = endpoints.asMutable();
      [workloads, workloadsByIp] = applyAddressed(workloads, workloadsByIp, changes.workloads, (prev, next) => updateEndpoints(eps, prev, next));
      endpoints = eps.asImmutable();
    }
    if (changes.services?.length) [services, servicesByVip] = applyAddressed(services, servicesByVip, changes.services);
    if (changes.policies?.length) {
      policies = policies.withMutations((p) => {
        for (const [key, next] of changes.policies!) {
          if (next) p.set(key, next);
          else p.delete(key);
        }
      });
    }
    return new MeshState(workloads, services, policies, workloadsByIp, servicesByVip, endpoints, this.version + 1);
  }
}

/** Applies changes to a map and its index by address; `each` sees every (previous, next) pair. */
function applyAddressed<T extends { addresses: string[] }>(all: PMap<string, T>, byAddress: PMap<string, T>, changes: Change<T>, each?: (prev: T | undefined, next: T | undefined) => void): [PMap<string, T>, PMap<string, T>] {
  const m = all.asMutable();
  const index = byAddress.asMutable();
  for (const [key, next] of changes) {
    const prev = m.get(key);
    if (next) m.set(key, next);
    else m.delete(key);
    if (next) for (const a of next.addresses) index.set(a, next);
    if (prev) for (const a of prev.addresses) if (index.get(a) === prev) reassign(index, a, m);
    each?.(prev, next);
  }
  return [m.asImmutable(), index.asImmutable()];
}

/**
 * An address its owner gave up goes to another resource that still has it (host-network pods
 * share the node's address), else leaves the index. Rare, so a scan is fine.
 */
function reassign<T extends { addresses: string[] }>(index: PMap<string, T>, address: string, all: PMap<string, T>): void {
  const other = all.find((x) => x.addresses.includes(address));
  if (other) index.set(address, other);
  else index.delete(address);
}

/** A workload keeps its place in each service's endpoint list; it joins at the end and leaves cleanly. */
function updateEndpoints(eps: PMap<string, readonly Workload[]>, prev: Workload | undefined, next: Workload | undefined): void {
  const before = new Set(prev ? Object.keys(prev.services) : []);
  const after = new Set(next ? Object.keys(next.services) : []);
  for (const key of before) {
    const list = eps.get(key) ?? [];
    if (after.has(key)) {
      const i = list.indexOf(prev!);
      eps.set(key, i < 0 ? [...list, next!] : list.map((x, j) => (j === i ? next! : x)));
    } else {
      const rest = list.filter((x) => x !== prev);
      if (rest.length) eps.set(key, rest);
      else eps.delete(key);
    }
  }
  for (const key of after) if (!before.has(key)) eps.set(key, [...(eps.get(key) ?? []), next!]);
}
