// The inbound decision: the destination must be the pod, known to the mesh, and never one of the
// agent's own ports (a self-call would loop under iptables capture or nest HBONE under eBPF).
import { describe, expect, it } from 'vitest';
import type { Workload } from '../../../src/api/mesh.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { DEFAULT_AGENT_PORTS, authorize } from '../../../src/agent/proxy/authorize.ts';
import type { ProxyPod } from '../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';

const IP = '10.244.1.7';
const workload: Workload = {
  uid: 'u1', name: 'echo', namespace: 'mesh', addresses: [IP], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-1', canonicalName: 'echo', canonicalRevision: 'latest', workloadType: 'POD', workloadName: 'echo',
  services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
};
const state = MeshState.empty().with({ workloads: [['u1', workload]] });
const ctx = (agentPorts?: Set<number>) => ({ state: () => state, engine: engineCache('istio-system'), agentPorts }) as unknown as ProxyContext;
const pod = { uid: 'u1', namespace: 'mesh', name: 'echo', serviceAccount: 'default', ips: [IP] } as ProxyPod;
const src = { ip: '10.244.0.9', identity: { trustDomain: 'cluster.local', namespace: 'mesh', serviceAccount: 'client' } };

describe('inbound authorize', () => {
  it('allows the pod on an application port', () => {
    expect(authorize(ctx(), pod, { address: IP, port: 8080 }, src)).toMatchObject({ ok: true });
  });

  it.each([15001, 15006, 15008, 15000, 15020, 15021])('refuses the agent port %i as a destination, before any policy', (port) => {
    const v = authorize(ctx(), pod, { address: IP, port }, src);
    expect(v).toMatchObject({ ok: false });
    expect(v.ok ? '' : v.reason).toContain('self-call');
    expect(v.ok ? undefined : v.policy).toBeUndefined(); // NR / 400, not a policy DENY
  });

  it('uses the ports the agent was started with', () => {
    const moved = new Set([15001, 15006, 15008, 9000]);
    expect(authorize(ctx(moved), pod, { address: IP, port: 9000 }, src)).toMatchObject({ ok: false });
    expect(authorize(ctx(moved), pod, { address: IP, port: 15020 }, src)).toMatchObject({ ok: true });
    expect([...DEFAULT_AGENT_PORTS].sort()).toEqual([15000, 15001, 15006, 15008, 15020, 15021]);
  });

  it('still refuses destinations that are not the pod', () => {
    expect(authorize(ctx(), pod, { address: '10.244.1.8', port: 8080 }, src)).toMatchObject({ ok: false });
  });
});
