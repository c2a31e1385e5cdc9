// Resources of one type contributed by groups (namespaces). A build hands over each group's
// resources as a map that is the same object while the group did not change, so only changed
// groups are compared, name by name, and the store is patched with the difference. A name two
// groups contribute (a policy shared by namespaces) stays while any of them still does.
import type { ResourceStore } from './resources.ts';

export type Bodies = ReadonlyMap<string, Uint8Array>;
const NONE: Bodies = new Map();

export class GroupedResources {
  private groups = new Map<string, Bodies>();
  /** name -> how many groups contribute it */
  private readonly owners = new Map<string, number>();

  constructor(
    private readonly store: ResourceStore,
    readonly typeUrl: string,
  ) {}

  /** Publishes the groups' resources: what differs from the last call goes to the store. */
  publish(next: ReadonlyMap<string, Bodies>): void {
    const set = new Map<string, Uint8Array>();
    const touched = new Set<string>();
    const compare = (before: Bodies, after: Bodies) => {
      if (before === after) return;
      for (const [name, body] of after) {
        if (before.get(name) === body) continue;
        if (!before.has(name)) this.owners.set(name, (this.owners.get(name) ?? 0) + 1);
        set.set(name, body);
        touched.add(name);
      }
      for (const name of before.keys())
        if (!after.has(name)) {
          this.owners.set(name, this.owners.get(name)! - 1);
          touched.add(name);
        }
    };
    for (const [group, after] of next) compare(this.groups.get(group) ?? NONE, after);
    for (const [group, before] of this.groups) if (!next.has(group)) compare(before, NONE);
    this.groups = new Map(next);
    const removed: string[] = [];
    for (const name of touched)
      if (!this.owners.get(name)) {
        this.owners.delete(name);
        set.delete(name);
        removed.push(name);
      }
    if (set.size || removed.length) this.store.patch(this.typeUrl, set, removed);
  }
}
