// Tracing and access logging at the waypoint from the Telemetry API, end to end over real parts
// (harness.ts: the control plane's ADS, HBONE, TLS) with an OTLP/HTTP receiver as the collector:
// the collector is a mesh Service whose endpoint the waypoint resolves through its routing table.
// One SERVER span per request, parented to the caller's W3C or B3 context, with Envoy's and
// Istio's tags; the upstream sees the waypoint's span as its parent; unsampled contexts are
// followed (propagated, not exported); random sampling at 10 % over 1,000 requests; access logs
// off by Telemetry; a dead or hanging collector leaves requests alone and memory bounded.
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { OtlpReceiver } from '../telemetry/otlp-receiver.ts';
import { Cleanup, HOST, NS, client, metric, seeded, stand, until, webPod, webService, type Stand } from './harness.ts';

const TID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SID = '00f067aa0ba902b7';

const collectorObjects = (port: number, timeout = '1s'): KObject[] => [
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'otel-collector', namespace: NS }, spec: { selector: { app: 'otel-collector' }, clusterIP: '10.96.0.77', ports: [{ name: 'http-otlp', port: 4318, targetPort: 'otlp' }] } },
  {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'otel-collector-0', namespace: NS, labels: { app: 'otel-collector' } },
    spec: { serviceAccountName: 'otel-collector', containers: [{ name: 'collector', ports: [{ name: 'otlp', containerPort: port }] }] },
    status: { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
  },
  {
    apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' },
    data: { mesh: `extensionProviders:\n- name: otel\n  opentelemetry:\n    service: otel-collector.${NS}.svc.cluster.local\n    port: 4318\n    http:\n      path: /v1/traces\n      timeout: ${timeout}\n` },
  } as KObject,
];
const telemetry = (spec: object): KObject => ({ apiVersion: 'telemetry.istio.io/v1', kind: 'Telemetry', metadata: { name: 'web', namespace: NS }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], ...spec } });
const traced = (percent: number, extra: object = {}) => telemetry({ tracing: [{ providers: [{ name: 'otel' }], randomSamplingPercentage: percent, customTags: { team: { literal: { value: 'core' } }, user: { header: { name: 'x-user', defaultValue: 'anon' } } } }], ...extra });

const FAST = { limits: { scheduledDelayMillis: 20 } };

async function tracedStand(cleanup: Cleanup, collectorPort: number, objects: KObject[], tracing: object = FAST, timeout?: string): Promise<Stand> {
  const s = await stand(cleanup, [webService(), webPod('v1'), ...collectorObjects(collectorPort, timeout), ...objects], { tracing });
  await until(() => s.config.table.telemetry?.get(`${HOST}:80`) !== undefined && (s.config.table.endpoints.get(`outbound|4318||otel-collector.${NS}.svc.cluster.local`)?.length ?? 0) > 0, 10_000, 'telemetry and the collector endpoint');
  return s;
}

describe('waypoint tracing', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  async function receiver() {
    const r = new OtlpReceiver();
    const { port } = await r.start();
    cleanup.add(() => r.close());
    return { r, port };
  }

  it('one SERVER span per request in the caller\'s W3C trace, parented to its span, with Istio\'s tags; the upstream\'s parent is the waypoint\'s span', async () => {
    const { r, port } = await receiver();
    const s = await tracedStand(cleanup, port, [traced(100)]);
    const c = client(cleanup, s);
    const res = await c.request('/hello?x=1', { headers: { traceparent: `00-${TID}-${SID}-01`, tracestate: 'vendor=a', 'x-request-id': 'req-1', 'user-agent': 'ua/1', 'x-user': 'alice' } });
    expect(res.status).toBe(200);
    await until(() => r.spans.length >= 1, 10_000, 'the span');
    await new Promise((d) => setTimeout(d, 100));
    expect(r.spans).toHaveLength(1);
    const span = r.spans[0]!;
    expect(span).toMatchObject({ traceId: TID, parentSpanId: SID, kind: 2, name: `${HOST}:80/*` });
    expect(span.resource['service.name']).toBe(`waypoint.${NS}`);
    expect(span.attributes).toMatchObject({
      component: 'proxy', 'http.method': 'GET', 'http.url': 'http://web/hello?x=1', 'http.status_code': '200', 'http.protocol': 'HTTP/1.1',
      'guid:x-request-id': 'req-1', user_agent: 'ua/1', 'peer.address': '127.0.0.1', response_flags: '-',
      upstream_cluster: `outbound|80||${HOST}`, 'istio.namespace': NS, 'istio.canonical_service': 'waypoint', 'istio.mesh_id': 'cluster.local',
      node_id: `waypoint~${NS}~waypoint`, team: 'core', user: 'alice', request_size: '0',
    });
    expect(Number(span.attributes.response_size)).toBeGreaterThan(0);
    const seen = s.v1.seen.at(-1)!.headers;
    expect(seen.traceparent).toBe(`00-${TID}-${span.spanId}-01`);
    expect(seen.tracestate).toBe('vendor=a');
    expect(span.spanId).not.toBe(SID);

    // Hostile contexts are no context: the request is served, a new trace starts (100 % sampled).
    for (const tp of ['00-zz-yy-01', `ff-${TID}-${SID}-01`, `00-${'0'.repeat(32)}-${SID}-01`, 'x'.repeat(8000)]) expect((await c.request('/', { headers: { traceparent: tp } })).status).toBe(200);
    expect((await c.request('/', { headers: { b3: 'not-a-b3-header-at-all', 'x-b3-traceid': 'q'.repeat(4000) } })).status).toBe(200);
    await until(() => r.spans.length >= 6, 10_000, 'the hostile-context spans');
    for (const sp of r.spans.slice(1)) expect([TID, '0'.repeat(32)]).not.toContain(sp.traceId);
  });

  it('B3 in, B3 out: multi-header and single-header contexts are followed and written back in the caller\'s encoding', async () => {
    const { r, port } = await receiver();
    const s = await tracedStand(cleanup, port, [traced(0)]);
    const c = client(cleanup, s);
    // Sampling at 0 %: the B3 sampled flag decides, not the percentage.
    await c.request('/m', { headers: { 'x-b3-traceid': TID, 'x-b3-spanid': SID, 'x-b3-sampled': '1' } });
    await until(() => r.spans.length >= 1, 10_000, 'the span');
    const m = r.spans[0]!;
    expect(m).toMatchObject({ traceId: TID, parentSpanId: SID });
    const up = s.v1.seen.at(-1)!.headers;
    expect(up).toMatchObject({ 'x-b3-traceid': TID, 'x-b3-spanid': m.spanId, 'x-b3-parentspanid': SID, 'x-b3-sampled': '1', traceparent: `00-${TID}-${m.spanId}-01` });

    await c.request('/s', { headers: { b3: `${TID}-${SID}-1` } });
    await until(() => r.spans.length >= 2, 10_000, 'the second span');
    const sp = r.spans[1]!;
    expect(sp).toMatchObject({ traceId: TID, parentSpanId: SID });
    expect(s.v1.seen.at(-1)!.headers.b3).toBe(`${TID}-${sp.spanId}-1-${SID}`);
    expect(s.v1.seen.at(-1)!.headers['x-b3-traceid']).toBeUndefined();
  });

  it('an unsampled context is followed: ids propagated with the flag off, nothing exported; deferred B3 falls to the percentage', async () => {
    const { r, port } = await receiver();
    const s = await tracedStand(cleanup, port, [traced(100)]);
    const c = client(cleanup, s);
    await c.request('/', { headers: { traceparent: `00-${TID}-${SID}-00` } });
    const tp = String(s.v1.seen.at(-1)!.headers.traceparent);
    expect(tp).toMatch(new RegExp(`^00-${TID}-[0-9a-f]{16}-00$`));
    expect(tp).not.toContain(SID);
    await c.request('/', { headers: { 'x-b3-traceid': TID, 'x-b3-spanid': SID, 'x-b3-sampled': '0' } });
    expect(s.v1.seen.at(-1)!.headers['x-b3-sampled']).toBe('0');
    // B3 without a decision: the listener's 100 % samples it.
    await c.request('/', { headers: { 'x-b3-traceid': TID, 'x-b3-spanid': SID } });
    await until(() => r.spans.length >= 1, 10_000, 'the deferred one');
    await s.waypoint.tracing.flush();
    expect(r.spans).toHaveLength(1);
    expect(r.spans[0]).toMatchObject({ traceId: TID, parentSpanId: SID });
    expect(s.waypoint.tracing.stats().ended).toBe(1);
  });

  it('random sampling at 10 % exports 10 % ± 3 of 1,000 requests without a context, each a new trace', async () => {
    const { r, port } = await receiver();
    const s = await tracedStand(cleanup, port, [traced(10)], { ...FAST, random: seeded(16) });
    const c = client(cleanup, s);
    const N = 1000;
    let next = 0;
    const upstreamSampled = { yes: 0, no: 0 };
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < N) {
          next++;
          expect((await c.request('/')).status).toBe(200);
        }
      }),
    );
    for (const seen of s.v1.seen) upstreamSampled[String(seen.headers.traceparent).endsWith('-01') ? 'yes' : 'no']++;
    await s.waypoint.tracing.flush();
    await until(() => r.spans.length === s.waypoint.tracing.stats().ended, 10_000, 'every sampled span');
    expect(r.spans.length).toBeGreaterThanOrEqual(70);
    expect(r.spans.length).toBeLessThanOrEqual(130);
    expect(upstreamSampled.yes).toBe(r.spans.length);
    expect(new Set(r.spans.map((sp) => sp.traceId)).size).toBe(r.spans.length);
    for (const sp of r.spans) expect(sp.parentSpanId).toBe('');
  });

  it('Telemetry turns the access log off for the Service (metrics kept), and on again', async () => {
    const { port } = await receiver();
    const s = await tracedStand(cleanup, port, [traced(0, { accessLogging: [{ disabled: true }] })]);
    const c = client(cleanup, s);
    await until(() => s.config.table.telemetry?.get(`${HOST}:80`)?.accessLog === false, 10_000, 'logging off');
    for (let i = 0; i < 5; i++) expect((await c.request('/quiet')).status).toBe(200);
    expect(s.accessLog.filter((e) => String(e.path).startsWith('/quiet'))).toEqual([]);
    expect(await metric(s.registry, 'istio_requests_total', { response_code: '200' })).toBe(5);
    s.apply([webService(), webPod('v1'), ...collectorObjects(port), traced(0, { accessLogging: [{ disabled: false }] })]);
    await until(() => s.config.table.telemetry?.get(`${HOST}:80`)?.accessLog === true, 10_000, 'logging on');
    await c.request('/loud');
    expect(s.accessLog.filter((e) => String(e.path).startsWith('/loud'))).toHaveLength(1);
  });

  it('a hanging collector, then a dead one: requests unaffected, spans held stay within maxQueueSize, drops counted', async () => {
    // Accepts and never answers.
    const held: Socket[] = [];
    const hang: Server = createServer((sock) => void held.push(sock.on('error', () => {})));
    await new Promise<void>((d) => hang.listen(0, '127.0.0.1', d));
    cleanup.add(() => new Promise<void>((d) => (held.forEach((x) => x.destroy()), hang.close(() => d()))));
    const port = (hang.address() as AddressInfo).port;
    const s = await tracedStand(cleanup, port, [traced(100)], { limits: { scheduledDelayMillis: 20, maxQueueSize: 40, maxExportBatchSize: 10 } }, '1s');
    const c = client(cleanup, s);
    const N = 300;
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < N) {
        next++;
        expect((await c.request('/')).status).toBe(200);
      }
    }));
    const st = s.waypoint.tracing.stats();
    expect(st.ended).toBe(N);
    expect(st.exported).toBe(0);
    expect(st.dropped).toBeGreaterThanOrEqual(N - 40 - st.failed);
    expect(st.ended - st.dropped - st.failed - st.exported).toBeLessThanOrEqual(40);
    // The collector dies: exports fail fast, requests still fine.
    held.forEach((x) => x.destroy());
    await new Promise<void>((d) => hang.close(() => d()));
    for (let i = 0; i < 20; i++) expect((await c.request('/')).status).toBe(200);
    await until(() => {
      const t = s.waypoint.tracing.stats();
      return t.ended === t.dropped + t.failed;
    }, 15_000, 'every span settled as failed or dropped');
  });
});
