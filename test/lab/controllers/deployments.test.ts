import { describe, expect, it } from 'vitest';
import type { Deployment, Pod } from '../../../src/kube/objects.ts';
import { reconcileDeployments } from '../../../src/lab/controllers/deployments.ts';
import type { LabNode } from '../../../src/lab/nodes.ts';
import { Scheduler } from '../../../src/lab/scheduler.ts';
import { ObjectStore } from '../../../src/lab/store.ts';

const node = (index: number): LabNode => ({ name: `node-${index}`, index, ip: '', ip6: '', netns: '', podCIDR: '', podCIDR6: '' });
const deployment = (replicas: number, image = 'weft/echo'): Deployment =>
  ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', namespace: 'default' },
    spec: { replicas, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image }] } } },
  }) as Deployment;

function setup(nodeCount: number) {
  const store = new ObjectStore();
  store.seed();
  const scheduler = new Scheduler(Array.from({ length: nodeCount }, (_, i) => node(i)), store, () => undefined);
  const pods = () => store.ofKind<Pod>('Pod');
  const perNode = () => pods().reduce<Record<string, number>>((m, p) => ({ ...m, [p.spec.nodeName!]: (m[p.spec.nodeName!] ?? 0) + 1 }), {});
  return { store, scheduler, pods, perNode, sync: () => reconcileDeployments(store, scheduler) };
}

describe('the lab deployment controller and scheduler', () => {
  it('makes the replicas from the template, spread over the nodes', () => {
    const t = setup(2);
    t.store.apply([deployment(3)], () => true);
    t.sync();
    expect(t.perNode()).toEqual({ 'node-0': 2, 'node-1': 1 });
    const [p] = t.pods();
    const hash = p!.metadata.labels!['pod-template-hash']!;
    expect(p!.metadata.name).toMatch(new RegExp(`^web-${hash}-[a-z0-9]{5}$`));
    expect(p!.metadata.labels).toEqual({ app: 'web', 'pod-template-hash': hash });
    expect(p!.metadata.ownerReferences).toEqual([{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'web', uid: t.store.ofKind('Deployment')[0]!.metadata.uid }]);
    t.sync();
    expect(t.pods()).toHaveLength(3); // steady
  });

  it('scales down from the fullest node, replaces pods when the template changes, and collects orphans', () => {
    const t = setup(2);
    t.store.apply([deployment(3)], () => true);
    t.sync();
    t.store.apply([deployment(2)], () => true);
    t.sync();
    expect(t.perNode()).toEqual({ 'node-0': 1, 'node-1': 1 });
    const before = t.pods().map((p) => p.metadata.name);
    t.store.apply([deployment(2, 'weft/sleep')], () => true);
    t.sync();
    expect(t.pods()).toHaveLength(2);
    expect(t.pods().some((p) => before.includes(p.metadata.name))).toBe(false);
    t.store.delete([{ kind: 'Deployment', metadata: { name: 'web', namespace: 'default' } }]);
    t.sync();
    expect(t.pods()).toEqual([]);
  });

  it('a pod without a node goes where the fewest pods run', () => {
    const t = setup(3);
    t.store.apply([{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x', namespace: 'default' }, spec: { containers: [{ name: 'c' }], nodeName: 'node-0' } } as Pod], () => true);
    expect(t.scheduler.pickNode([]).name).toBe('node-1');
  });
});
