// Istio's HTTP request series: Istio's names, labels and buckets; counts exactly what was recorded;
// and `promtool check metrics` (when installed) finds nothing but its lint of Istio's own ms name.
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Workload } from '../../src/api/mesh.ts';
import { promtoolProblems } from './promtool.ts';
import { BYTES_BUCKETS, DURATION_BUCKETS_MS, HTTP_LABELS, httpLabels, IstioHttpMetrics, type RequestOutcome } from '../../src/telemetry/istio-http.ts';

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

  it('formats exactly what prom-client would, for the same requests; a changed workload counts into its own series', async () => {
    const ours = new Registry();
    const m = new IstioHttpMetrics(ours);
    // The reference: prom-client's own Counter and Histograms, fed the same requests.
    const ref = new Registry();
    const registers = [ref];
    const requests = new Counter({ name: 'istio_requests_total', help: 'Requests processed', labelNames: HTTP_LABELS, registers });
    const duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames: HTTP_LABELS, buckets: DURATION_BUCKETS_MS, registers });
    const reqBytes = new Histogram({ name: 'istio_request_bytes', help: 'Request sizes in bytes', labelNames: HTTP_LABELS, buckets: BYTES_BUCKETS, registers });
    const resBytes = new Histogram({ name: 'istio_response_bytes', help: 'Response sizes in bytes', labelNames: HTTP_LABELS, buckets: BYTES_BUCKETS, registers });
    const server = wl('server');
    const both = (o: RequestOutcome) => {
      m.record(o);
      const l = httpLabels(o);
      requests.inc(l);
      duration.observe(l, o.durationMs);
      reqBytes.observe(l, o.requestBytes);
      resBytes.observe(l, o.responseBytes);
    };
    const base = { reporter: 'waypoint', src: wl('client'), dst: server, mtls: true, protocol: 'http', responseFlags: '-' } as const;
    // Values on bucket bounds, between them, beyond the last (+Inf), and zero.
    const values = [0, 0.5, 0.7, 1, 5, 999, 1000, 1001, 3_600_000, 4e9];
    values.forEach((v, i) => both({ ...base, responseCode: i % 3 ? 200 : 503, responseFlags: i % 3 ? '-' : 'UF', durationMs: v, requestBytes: v, responseBytes: values.length - i }));
    // The same pod, relabelled: a new workload object, so a new series (labels are not reused from the old one).
    both({ ...base, dst: { ...server, canonicalRevision: 'v2' }, responseCode: 200, durationMs: 2, requestBytes: 3, responseBytes: 4 });
    both({ ...base, protocol: 'grpc', grpcStatus: 5, responseCode: 200, durationMs: 2, requestBytes: 3, responseBytes: 4 });
    const sorted = (t: string) => t.split('\n').sort().join('\n');
    expect(sorted(await ours.metrics())).toBe(sorted(await ref.metrics()));
    const json = async (r: Registry) => JSON.parse(JSON.stringify(await r.getMetricsAsJSON(), (k, v: unknown) => (k === 'exemplar' ? undefined : v))) as unknown; // prom-client's exemplars are off: null
    expect(await json(ours)).toEqual(await json(ref));
    expect(await ours.metrics()).toContain('destination_version="v2"');
  });
});
