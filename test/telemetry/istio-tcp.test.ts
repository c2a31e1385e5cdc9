// Istio's TCP counters count into cached series; a scrape must show exactly what was counted,
// across scrapes, and a workload that changed must not keep its old labels.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Workload } from '../../src/api/mesh.ts';
import { IstioTcpMetrics } from '../../src/telemetry/istio-tcp.ts';

const wl = (name: string, revision = 'v1'): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: ['10.0.0.1'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: name, node: 'n', canonicalName: name, canonicalRevision: revision, workloadType: 'POD', workloadName: name, services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});

async function values(registry: Registry, name: string) {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name) as { values: { value: number; labels: Record<string, string> }[] };
  return m.values.map((v) => ({ value: v.value, src: v.labels.source_workload, rev: v.labels.destination_version, flag: v.labels.response_flags })).sort((a, b) => `${a.rev}${a.flag}`.localeCompare(`${b.rev}${b.flag}`));
}

describe('Istio TCP metrics', () => {
  it('counts per label set through cached series, across scrapes, and relabels a changed workload', async () => {
    const registry = new Registry();
    const m = new IstioTcpMetrics(registry);
    const client = wl('client');
    let server = wl('server');
    const facts = () => ({ reporter: 'source' as const, src: client, dst: server, mtls: true });
    for (let i = 0; i < 3; i++) {
      m.series(facts()).opened++;
      const s = m.series(facts(), i === 2 ? 'DENY' : '-');
      s.closed++;
      s.received += 100;
    }
    expect(m.series(facts())).toBe(m.series(facts())); // the same series, not rebuilt
    expect(await values(registry, 'istio_tcp_connections_opened_total')).toEqual([{ value: 3, src: 'client', rev: 'v1', flag: '-' }]);
    expect(await values(registry, 'istio_tcp_connections_closed_total')).toEqual([
      { value: 2, src: 'client', rev: 'v1', flag: '-' },
      { value: 1, src: 'client', rev: 'v1', flag: 'DENY' },
    ]);
    // A second scrape with nothing new shows the same totals; new counts add to them.
    m.series(facts()).opened++;
    expect(await values(registry, 'istio_tcp_connections_opened_total')).toEqual([{ value: 4, src: 'client', rev: 'v1', flag: '-' }]);
    expect((await values(registry, 'istio_tcp_received_bytes_total')).reduce((n, v) => n + v.value, 0)).toBe(300);

    server = wl('server', 'v2'); // same uid, a new object from the control plane
    m.series(facts()).opened++;
    expect(await values(registry, 'istio_tcp_connections_opened_total')).toEqual([
      { value: 4, src: 'client', rev: 'v1', flag: '-' },
      { value: 1, src: 'client', rev: 'v2', flag: '-' },
    ]);
  });
});
