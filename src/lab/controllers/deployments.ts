// The lab's deployment controller: each Deployment owns pods made from its template (named
// <deployment>-<template hash>-<random>, labelled pod-template-hash); a changed template replaces
// them, replicas scale them, and pods whose Deployment is gone are garbage collected.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Deployment, Pod } from '../../kube/objects.ts';
import type { Scheduler } from '../scheduler.ts';
import { hashOf, type ObjectStore } from '../store.ts';

const SAFE = 'bcdfghjklmnpqrstvwxz2456789';
const safeString = (bytes: Buffer, n: number) => [...bytes.subarray(0, n)].map((b) => SAFE[b % SAFE.length]).join('');

/** Moves the stored pods toward what the stored Deployments ask for. */
export function reconcileDeployments(store: ObjectStore, scheduler: Scheduler): void {
  const deployments = store.ofKind<Deployment>('Deployment');
  const live = new Set(deployments.map((d) => d.metadata.uid));
  store.removeWhere((o) => {
    const owner = o.metadata.ownerReferences?.[0];
    return o.kind === 'Pod' && owner?.kind === 'Deployment' && !live.has(owner.uid); // garbage collection
  });
  for (const d of deployments) {
    const ns = d.metadata.namespace!;
    const tmplHash = safeString(Buffer.from(hashOf(d.spec.template), 'hex'), 10);
    const owned = store.ofKind<Pod>('Pod').filter((o) => o.metadata.namespace === ns && o.metadata.ownerReferences?.[0]?.uid === d.metadata.uid);
    const current = owned.filter((p) => p.metadata.labels?.['pod-template-hash'] === tmplHash);
    for (const p of owned) if (!current.includes(p)) store.remove(p); // template changed: replace
    const replicas = d.spec.replicas ?? 1;
    // Scale down: remove from the node that has the most replicas, newest first.
    while (current.length > replicas) {
      const perNode = scheduler.countByNode(current);
      current.sort((a, b) => (perNode.get(scheduler.nodeOf(b)) ?? 0) - (perNode.get(scheduler.nodeOf(a)) ?? 0) || (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? ''));
      store.remove(current.shift()!);
    }
    while (current.length < replicas) {
      const name = `${d.metadata.name}-${tmplHash}-${safeString(randomBytes(5), 5)}`;
      const node = scheduler.pickNode(current);
      const pod: Pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: ns,
          uid: randomUUID(),
          creationTimestamp: new Date().toISOString(),
          labels: { ...(d.spec.template.metadata?.labels ?? {}), 'pod-template-hash': tmplHash },
          annotations: d.spec.template.metadata?.annotations,
          ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: d.metadata.name, uid: d.metadata.uid! }],
        },
        spec: { ...structuredClone(d.spec.template.spec), nodeName: d.spec.template.spec.nodeName ?? node.name },
      };
      store.put(pod);
      current.push(pod);
    }
  }
}
