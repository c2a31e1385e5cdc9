import { describe, expect, it } from 'vitest';
import type { KObject, Pod } from '../../src/kube/objects.ts';
import { ObjectStore } from '../../src/lab/store.ts';

const ns = (name: string, labels?: Record<string, string>): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const pod = (name: string, namespace = 'shop', nodeName?: string): Pod => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, spec: { containers: [{ name: 'c', image: 'weft/echo' }], nodeName } });
const nodes = (name: string) => name === 'node-0';

describe('the lab object store', () => {
  it('applies namespaces before what lives in them, and says what changed', () => {
    const s = new ObjectStore();
    s.seed();
    expect(s.apply([pod('a'), ns('shop')], nodes)).toEqual([
      { object: 'Namespace shop', result: 'created' },
      { object: 'Pod shop/a', result: 'created' },
    ]);
    const uid = s.ofKind<Pod>('Pod')[0]!.metadata.uid;
    expect(uid).toBeTruthy();
    expect(s.apply([pod('a')], nodes)).toEqual([{ object: 'Pod shop/a', result: 'unchanged' }]);
    expect(s.apply([ns('shop', { 'istio.io/dataplane-mode': 'ambient' })], nodes)).toEqual([{ object: 'Namespace shop', result: 'configured' }]);
    expect(s.namespace('shop')?.metadata.labels).toEqual({ 'istio.io/dataplane-mode': 'ambient' });
    expect(s.ofKind<Pod>('Pod')[0]!.metadata.uid).toBe(uid);
  });

  it('refuses objects in a missing namespace or on a missing node', () => {
    const s = new ObjectStore();
    s.seed();
    expect(s.apply([pod('a', 'nowhere'), pod('b', 'default', 'node-9')], nodes)).toEqual([
      { object: 'Pod nowhere/a', result: 'error', error: 'metadata.namespace: namespace "nowhere" not found' },
      { object: 'Pod default/b', result: 'error', error: 'spec.nodeName: node "node-9" not found' },
    ]);
    expect(s.ofKind('Pod')).toEqual([]);
  });

  it('keeps the node a pod was scheduled to when it is re-applied without one', () => {
    const s = new ObjectStore();
    s.seed();
    s.apply([pod('a', 'default', 'node-0')], nodes);
    expect(s.apply([pod('a', 'default')], nodes)).toEqual([{ object: 'Pod default/a', result: 'unchanged' }]);
    expect(s.ofKind<Pod>('Pod')[0]!.spec.nodeName).toBe('node-0');
  });

  it('deleting a namespace deletes what lives in it', () => {
    const s = new ObjectStore();
    s.seed();
    s.apply([ns('shop'), pod('a'), pod('b', 'default')], nodes);
    expect(s.delete([{ kind: 'Namespace', metadata: { name: 'shop' } }, { kind: 'Pod', metadata: { name: 'zz' } }])).toEqual([
      { object: 'Namespace shop', result: 'deleted' },
      { object: 'Pod zz', result: 'not found' },
    ]);
    expect(s.ofKind<Pod>('Pod').map((p) => p.metadata.name)).toEqual(['b']);
  });
});
