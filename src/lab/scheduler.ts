// The lab's scheduler: which node a new pod runs on. Pods spread: fewest pods of the same owner
// first, then fewest pods overall, then the lowest node index.
import type { Pod } from '../kube/objects.ts';
import type { LabNode } from './nodes.ts';
import type { ObjectStore } from './store.ts';

export class Scheduler {
  constructor(
    private readonly nodes: readonly LabNode[],
    private readonly store: ObjectStore,
    /** The node a pod runs on, if it runs. */
    private readonly runningOn: (p: Pod) => string | undefined,
  ) {}

  /** The node a pod is on: where it runs, else where it is scheduled. */
  nodeOf(p: Pod): string {
    return this.runningOn(p) ?? p.spec.nodeName ?? '';
  }

  countByNode(pods: Pod[]): Map<string, number> {
    const m = new Map<string, number>();
    for (const p of pods) m.set(this.nodeOf(p), (m.get(this.nodeOf(p)) ?? 0) + 1);
    return m;
  }

  /** Spread: fewest pods of the same owner (siblings), then fewest pods overall, then lowest index. */
  pickNode(siblings: Pod[]): LabNode {
    const mine = this.countByNode(siblings);
    const all = new Map<string, number>();
    for (const o of this.store.ofKind<Pod>('Pod')) all.set(o.spec.nodeName ?? '', (all.get(o.spec.nodeName ?? '') ?? 0) + 1);
    return [...this.nodes].sort((a, b) => (mine.get(a.name) ?? 0) - (mine.get(b.name) ?? 0) || (all.get(a.name) ?? 0) - (all.get(b.name) ?? 0) || a.index - b.index)[0]!;
  }
}
