// Istio's HTTP request series: Istio's names, labels and buckets; counts exactly what was recorded;
// and `promtool check metrics` (when installed) finds nothing but its lint of Istio's own ms name.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Workload } from '../../src/api/mesh.ts';
import { promtoolProblems } from './promtool.ts';
import { DURATION_BUCKETS_MS, HTTP_LABELS, IstioHttpMetrics } from '../../src/telemetry/istio-http.ts';

const wl = (name: string): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: ['10.0.0.1'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: name, node: 'n', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});

describe('Istio HTTP metrics', () => {
  it('records requests with reporter="waypoint", Istio labels and buckets; promtool-clean', async () => {
    const registry = new Registry();
    const m = new IstioHttpMetrics(registry);
    const one = (code: number, flags = '-') =>
      m.record({ reporter: 'waypoint', src: wl('client'), dst: wl('server'), srcPrincipal: 'spiffe://cluster.local/ns/ns/sa/client', mtls: true, protocol: 'http', responseCode: code, responseFlags: flags, durationMs: 3, requestBytes: 10, responseBytes: 2000 });
    for (let i = 0; i < 5; i++) one(200);
    one(503, 'UH');
    const json = await registry.getMetricsAsJSON();
    const total = json.find((x) => x.name === 'istio_requests_total')!.values;
    expect(total.map((v) => [v.labels.response_code, v.labels.response_flags, v.value])).toEqual([['200', '-', 5], ['503', 'UH', 1]]);
    expect(Object.keys(total[0]!.labels).sort()).toEqual([...HTTP_LABELS].sort());
    expect(total[0]!.labels).toMatchObject({ reporter: 'waypoint', source_workload: 'client', destination_workload: 'server', connection_security_policy: 'mutual_tls', request_protocol: 'http' });
    const text = await registry.metrics();
    for (const le of DURATION_BUCKETS_MS) expect(text).toContain(`le="${le}"`);
    expect(text).toMatch(/istio_response_bytes_bucket\{le="1000",[^}]*response_code="200"[^}]*\} 0\n/);
    expect(text).toMatch(/istio_response_bytes_bucket\{le="10000",[^}]*response_code="200"[^}]*\} 5\n/);
    expect(promtoolProblems(text) ?? []).toEqual([]);
  });
});
