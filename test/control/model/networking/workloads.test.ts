// A dual-stack pod is one workload with both addresses, so agents find it by either.
import { describe, expect, it } from 'vitest';
import { buildService, buildWorkload, DEFAULT_MESH, podAddresses } from '../../../../src/control/model/networking/workloads.ts';
import type { Service as KService } from '../../../../src/kube/objects.ts';
import type { Pod } from '../../../../src/kube/objects.ts';

const pod = (status: Partial<NonNullable<Pod['status']>>): Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'ns' },
  spec: { containers: [{ name: 'c', image: 'weft/echo' }] },
  status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }], ...status },
});

describe('workload addresses', () => {
  it('publishes every address in status.podIPs, podIP first', () => {
    const w = buildWorkload(pod({ podIP: '10.244.1.2', podIPs: [{ ip: '10.244.1.2' }, { ip: 'fd00:10:244:1::2' }] }), [], [], DEFAULT_MESH);
    expect(w?.addresses).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
  });

  it('falls back to podIP, and serves an IPv6-only pod', () => {
    expect(podAddresses(pod({ podIP: '10.244.1.2' }))).toEqual(['10.244.1.2']);
    expect(buildWorkload(pod({ podIP: 'fd00:10:244:1::2', podIPs: [{ ip: 'fd00:10:244:1::2' }] }), [], [], DEFAULT_MESH)?.addresses).toEqual(['fd00:10:244:1::2']);
  });

  it('skips what is not an address, and a pod with none is no workload', () => {
    expect(podAddresses(pod({ podIP: '10.244.1.2', podIPs: [{ ip: 'not-an-ip' }, { ip: 'fe80::1%eth0' }, {} as { ip: string }] }))).toEqual(['10.244.1.2']);
    expect(buildWorkload(pod({ podIPs: [{ ip: 'bogus' }] }), [], [], DEFAULT_MESH)).toBeUndefined();
  });
});

describe('service addresses', () => {
  const svc = (spec: Partial<KService['spec']>): KService => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'ns' }, spec: { ports: [{ port: 80 }], ...spec } });
  it('publishes every VIP of a dual-stack service', () => {
    expect(buildService(svc({ clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10', 'fd00:10:96::a'] }), DEFAULT_MESH)?.addresses).toEqual(['10.96.0.10', 'fd00:10:96::a']);
  });
  it('has none for a headless service, and one for a single-stack one', () => {
    expect(buildService(svc({ clusterIP: 'None', clusterIPs: ['None'] }), DEFAULT_MESH)?.addresses).toEqual([]);
    expect(buildService(svc({ clusterIP: '10.96.0.10' }), DEFAULT_MESH)?.addresses).toEqual(['10.96.0.10']);
  });
});
