// The agent's snapshots: after any run of updates the indexes equal ones rebuilt from scratch, and
// a snapshot a connection holds never changes under it.
import { describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../../src/api/mesh.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';

const workload = (i: number, gen: number, svcs: string[]): Workload =>
  ({ uid: `w${i}`, name: `w${i}`, namespace: 'ns', addresses: [`10.0.0.${i}`], services: Object.fromEntries(svcs.map((s) => [`ns/${s}`, [{ servicePort: 80, targetPort: 8080 + gen }]])) }) as unknown as Workload;
const service = (name: string, vip: string): Service => ({ name, namespace: 'ns', hostname: name, addresses: [vip], ports: [], subjectAltNames: [] }) as unknown as Service;

/** The indexes as the agent used to compute them: from every workload, in insertion order. */
function fromScratch(ws: Map<string, Workload>, ss: Map<string, Service>) {
  const byIp = new Map<string, string>();
  const eps = new Map<string, string[]>();
  for (const w of ws.values()) {
    for (const a of w.addresses) byIp.set(a, w.uid);
    for (const k of Object.keys(w.services)) eps.set(k, [...(eps.get(k) ?? []), w.uid]);
  }
  const byVip = new Map<string, string>();
  for (const s of ss.values()) for (const a of s.addresses) byVip.set(a, s.name);
  return { byIp, eps, byVip };
}

describe('MeshState', () => {
  it('keeps its indexes equal to a rebuild through random updates', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const ws = new Map<string, Workload>();
    const ss = new Map<string, Service>();
    let state = MeshState.empty();
    for (let step = 0; step < 300; step++) {
      const wc: [string, Workload | undefined][] = [];
      const sc: [string, Service | undefined][] = [];
      for (let k = 0; k < 1 + rnd(4); k++) {
        const i = rnd(20);
        if (rnd(4) === 0) {
          ws.delete(`w${i}`);
          wc.push([`w${i}`, undefined]);
        } else {
          const w = workload(i, step, ['a', 'b', 'c'].filter(() => rnd(2) === 0));
          ws.set(w.uid, w);
          wc.push([w.uid, w]);
        }
        const s = `s${rnd(5)}`;
        if (rnd(3) === 0) {
          ss.delete(s);
          sc.push([s, undefined]);
        } else {
          const v = service(s, `10.96.0.${rnd(8)}`);
          ss.set(s, v);
          sc.push([s, v]);
        }
      }
      state = state.with({ workloads: wc, services: sc });
      const want = fromScratch(ws, ss);
      expect(new Map([...state.workloadsByIp].map(([a, w]) => [a, w.uid])), `step ${step}`).toEqual(want.byIp);
      expect(new Map([...state.endpoints].map(([k, l]) => [k, l.map((w) => w.uid)])), `step ${step}`).toEqual(want.eps);
      expect([...state.workloads.keys()].sort()).toEqual([...ws.keys()].sort());
      // Two services may share a VIP in this random run; the index holds one of them.
      for (const [vip, name] of want.byVip) expect(ss.get(state.servicesByVip.get(vip)?.name ?? '')?.addresses, `${vip} -> ${name}`).toContain(vip);
    }
    expect(state.version).toBe(300);
  });

  it('never changes a snapshot someone holds', () => {
    const s1 = MeshState.empty().with({ workloads: [['w1', workload(1, 0, ['a'])]], policies: [['ns/p', { name: 'p' } as never]] });
    const s2 = s1.with({ workloads: [['w1', undefined], ['w2', workload(2, 0, ['a'])]], policies: [['ns/p', undefined]] });
    expect([...s1.workloads.keys()]).toEqual(['w1']);
    expect(s1.endpoints.get('ns/a')!.map((w) => w.uid)).toEqual(['w1']);
    expect(s1.policies.has('ns/p')).toBe(true);
    expect([...s2.workloads.keys()]).toEqual(['w2']);
    expect(s2.endpoints.get('ns/a')!.map((w) => w.uid)).toEqual(['w2']);
    expect(s2.workloadsByIp.has('10.0.0.1')).toBe(false);
    expect(s2.policies.size).toBe(0);
    // What an update did not touch is shared, not copied.
    expect(s1.with({ policies: [['ns/q', { name: 'q' } as never]] }).workloads).toBe(s1.workloads);
  });
});
