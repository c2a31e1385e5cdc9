// A dual-stack destination is reached in the family the app dialled: an IPv6 connection must not
// turn into IPv4 halfway (the peer and policies would see another address than the app used).
import { describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../../../src/api/mesh.ts';
import { planOutbound, sameFamily } from '../../../../src/agent/proxy/outbound/plan.ts';
import { MeshState } from '../../../../src/agent/state/mesh-state.ts';

const workload = (name: string, addresses: string[], tunnelProtocol: Workload['tunnelProtocol'] = 'HBONE'): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses, network: '', tunnelProtocol, trustDomain: 'cluster.local', serviceAccount: 'default',
  node: 'node-1', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: { 'ns/svc.ns.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] }, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const svc = (addresses: string[]): Service => ({ name: 'svc', namespace: 'ns', hostname: 'svc.ns.svc.cluster.local', addresses, ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [] });

describe('outbound plan, dual stack', () => {
  const dual = workload('dual', ['10.244.1.2', 'fd00:10:244:1::2']);
  const state = MeshState.empty().with({ workloads: [[dual.uid, dual]], services: [['ns/svc.ns.svc.cluster.local', svc(['10.96.0.10', 'fd00:10:96::a'])]] });

  it('dials the IPv6 address of a workload reached by its IPv6 address, HBONE included', () => {
    const p = planOutbound(state, { address: 'fd00:10:244:1::2', port: 8080 });
    expect(p).toMatchObject({ kind: 'hbone', target: { address: 'fd00:10:244:1::2', port: 8080 }, hbone: { address: 'fd00:10:244:1::2', port: 15008 } });
    expect(planOutbound(state, { address: '10.244.1.2', port: 8080 })).toMatchObject({ kind: 'hbone', hbone: { address: '10.244.1.2' } });
  });

  it('picks the endpoint address of the VIP\'s family', () => {
    expect(planOutbound(state, { address: 'fd00:10:96::a', port: 80 })).toMatchObject({ kind: 'hbone', target: { address: 'fd00:10:244:1::2', port: 8080 } });
    expect(planOutbound(state, { address: '10.96.0.10', port: 80 })).toMatchObject({ kind: 'hbone', target: { address: '10.244.1.2', port: 8080 } });
  });

  it('falls back to the first address when the workload has none of that family', () => {
    expect(sameFamily(['10.244.1.2'], 'fd00::1')).toBe('10.244.1.2');
    expect(sameFamily(['fd00::2', '10.0.0.2'], '10.0.0.9')).toBe('10.0.0.2');
    expect(sameFamily([], '10.0.0.9')).toBeUndefined();
  });
});
