// The registry the node-local fast path reads: a destination takes the fast path exactly while a
// pod holding its address is enrolled on this node.
import { describe, expect, it } from 'vitest';
import { LocalPods } from '../../../../src/agent/proxy/node-local/local-pods.ts';
import type { ProxyPod } from '../../../../src/agent/proxy/types.ts';

const pod = (name: string, ips: string[]) => ({ uid: name, namespace: 'shop', name, serviceAccount: name, ips }) as ProxyPod;

describe('local pods', () => {
  it('finds an enrolled pod by each of its addresses, and no longer once it left', () => {
    const local = new LocalPods();
    const web = pod('web', ['10.244.1.10', 'fd00:10:244:1::10']);
    expect(local.get('10.244.1.10')).toBeUndefined();
    local.add(web);
    expect(local.get('10.244.1.10')).toBe(web);
    expect(local.get('fd00:10:244:1::10')).toBe(web);
    expect(local.get('10.244.2.10')).toBeUndefined(); // another node's pod: HBONE
    expect(local.ips()).toEqual(['10.244.1.10', 'fd00:10:244:1::10']);
    local.remove(web);
    expect(local.get('10.244.1.10')).toBeUndefined();
    expect(local.ips()).toEqual([]);
  });

  it('leaves an address to the pod that holds it now when an earlier holder leaves', () => {
    const local = new LocalPods();
    const old = pod('old', ['10.244.1.20']);
    const next = pod('next', ['10.244.1.20']); // the address was reused before the old pod was released
    local.add(old);
    local.add(next);
    local.remove(old);
    expect(local.get('10.244.1.20')).toBe(next);
    local.clear();
    expect(local.get('10.244.1.20')).toBeUndefined();
  });
});
