// The access log over OTLP logs, against a real OTLP/HTTP receiver (decoding with the spec's
// messages, not the SDK's): one LogRecord per line with the line's fields, and a collector that is
// down, refusing (503) or hanging never holds more than the cap, never loses a record uncounted,
// and never keeps shutdown past its deadline.
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../src/api/mesh.ts';
import { accessLogEntry, logConnection, type AccessLogSink } from '../../src/telemetry/access-log.ts';
import type { ConnectionRecord } from '../../src/telemetry/connection.ts';
import { OtlpAccessLogExporter, parseOtlpHeaders, type OtlpLogsOptions, type OtlpLogsStats } from '../../src/telemetry/otlp-logs.ts';
import { OtlpReceiver } from './otlp-receiver.ts';

const wl = (name: string): Workload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses: ['10.244.1.2'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: name,
  node: 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const svc: Service = { name: 'cart', namespace: 'shop', hostname: 'cart.shop.svc.cluster.local', addresses: ['10.96.0.5'], ports: [], subjectAltNames: [] };
const ok: ConnectionRecord = {
  direction: 'outbound', pod: 'shop/buyer', srcAddr: '10.244.1.2:40000', srcWorkload: wl('buyer'), srcIdentity: 'spiffe://cluster.local/ns/shop/sa/buyer',
  dstAddr: '10.244.2.3:8080', hboneAddr: '10.244.2.3:15008', service: svc, dstWorkload: wl('cart'), dstIdentity: 'spiffe://cluster.local/ns/shop/sa/cart',
  transport: 'hbone', sent: 10, received: 20, durationMs: 1.25,
};
const denied: ConnectionRecord = { ...ok, direction: 'inbound', error: 'denied by authorization policy', responseFlags: 'DENY', policy: 'shop/deny-all', audit: ['shop/audit'] };
const quiet: AccessLogSink = { info: () => {}, warn: () => {} };

const receiver = new OtlpReceiver();
let url: string;
const exporters: OtlpAccessLogExporter[] = [];
const make = (o: Partial<OtlpLogsOptions> & { endpoint: string }) => {
  const e = new OtlpAccessLogExporter({ resource: { 'service.name': 'weft-agent', 'k8s.node.name': 'node-1' }, delayMs: 20, ...o });
  exporters.push(e);
  return e;
};
const add = (s: OtlpLogsStats) => s.exported + s.dropped.queue_full + s.dropped.export_failed + s.held;

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  url = (await receiver.start()).url;
});
afterEach(async () => {
  await Promise.all(exporters.splice(0).map((e) => e.shutdown(500)));
  receiver.logs.length = 0;
  receiver.posts.clear();
  receiver.failWith = undefined;
});
afterAll(() => receiver.close());

describe('OTLP access-log export', () => {
  it('one LogRecord per line: the line\'s fields as attributes, its message as body, INFO or WARN, the resource', async () => {
    const e = make({ endpoint: `${url}/v1/logs`, headers: { authorization: 'Bearer t0ken' } });
    logConnection(quiet, ok, e);
    logConnection(quiet, denied, e);
    await e.shutdown(); // flushes
    expect(receiver.refused).toEqual([]);
    expect(receiver.posts.get('/v1/logs')).toBeGreaterThan(0);
    expect(receiver.logs).toHaveLength(2);
    const [a, b] = receiver.logs;
    expect(a!.body).toBe('connection complete');
    expect([a!.severityNumber, a!.severityText]).toEqual([9, 'INFO']); // SeverityNumber INFO, as the spec numbers it
    expect(a!.attributes).toEqual(Object.fromEntries(Object.entries(accessLogEntry(ok)).filter(([, v]) => v !== undefined)));
    expect(a!.attributes).toMatchObject({
      'src.addr': '10.244.1.2:40000', 'src.workload': 'buyer', 'src.namespace': 'shop', 'src.identity': 'spiffe://cluster.local/ns/shop/sa/buyer',
      'dst.addr': '10.244.2.3:8080', 'dst.service': 'cart.shop.svc.cluster.local', 'dst.workload': 'cart', 'dst.identity': 'spiffe://cluster.local/ns/shop/sa/cart',
      direction: 'outbound', protocol: 'HBONE', bytes_sent: 10, bytes_recv: 20, duration_ms: 1.25,
    });
    expect(a!.timeNs).toBeGreaterThan(0n);
    expect(a!.resource).toMatchObject({ 'service.name': 'weft-agent', 'k8s.node.name': 'node-1', 'telemetry.sdk.language': 'nodejs' });
    expect(b!.body).toBe('connection failed');
    expect([b!.severityNumber, b!.severityText]).toEqual([13, 'WARN']);
    expect(b!.attributes).toMatchObject({ direction: 'inbound', error: 'denied by authorization policy', response_flags: 'DENY', policy: 'shop/deny-all', audit: ['shop/audit'] });
    expect(e.stats()).toEqual({ exported: 2, dropped: { queue_full: 0, export_failed: 0 }, held: 0 });
  });

  it('sends the configured headers', async () => {
    const seen: (string | undefined)[] = [];
    // The receiver keeps no headers: a plain listener shows them.
    const srv = (await import('node:http')).createServer((req, res) => {
      seen.push(req.headers.authorization);
      req.resume().on('end', () => res.writeHead(200).end());
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const e = make({ endpoint: `http://127.0.0.1:${port}/v1/logs`, headers: parseOtlpHeaders('authorization=Bearer%20t0ken') });
    logConnection(quiet, ok, e);
    await e.shutdown();
    srv.close();
    expect(seen).toEqual(['Bearer t0ken']);
  });

  it('header lists parse as OTEL_EXPORTER_OTLP_HEADERS; a malformed one is refused', () => {
    expect(parseOtlpHeaders('a=1, x-tenant = acme ,b=c%3Dd')).toEqual({ a: '1', 'x-tenant': 'acme', b: 'c=d' });
    expect(() => parseOtlpHeaders('novalue')).toThrow(/novalue.*name=value/);
    expect(() => parseOtlpHeaders('bad name=1')).toThrow(/name=value/);
    expect(() => make({ endpoint: 'ftp://collector/v1/logs' })).toThrow(/http or https/);
    expect(() => make({ endpoint: 'not a url' })).toThrow();
  });

  it('collector answering 503: records dropped and counted as export_failed, nothing held', async () => {
    receiver.failWith = 503;
    const e = make({ endpoint: `${url}/v1/logs`, timeoutMs: 300 });
    for (let i = 0; i < 5; i++) logConnection(quiet, ok, e);
    await until(() => e.stats().dropped.export_failed === 5);
    expect(e.stats()).toEqual({ exported: 0, dropped: { queue_full: 0, export_failed: 5 }, held: 0 });
    expect(receiver.posts.get('/v1/logs')).toBeGreaterThan(0);
    // The collector recovers: later records go through.
    receiver.failWith = undefined;
    logConnection(quiet, ok, e);
    await until(() => e.stats().exported === 1);
    expect(receiver.logs).toHaveLength(1);
  });

  it('collector down: held records never exceed the cap, the rest counted as queue_full, every record accounted for', async () => {
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const port = (dead.address() as { port: number }).port;
    await new Promise<void>((r) => dead.close(() => r())); // nothing listens there now
    const e = make({ endpoint: `http://127.0.0.1:${port}/v1/logs`, timeoutMs: 300, maxQueue: 50, maxBatch: 10 });
    let maxHeld = 0;
    for (let i = 0; i < 1_000; i++) {
      logConnection(quiet, ok, e);
      maxHeld = Math.max(maxHeld, e.stats().held);
    }
    expect(maxHeld).toBe(50);
    expect(e.stats().dropped.queue_full).toBe(950);
    await until(() => e.stats().held === 0);
    expect(e.stats()).toEqual({ exported: 0, dropped: { queue_full: 950, export_failed: 50 }, held: 0 });
    expect(add(e.stats())).toBe(1_000);
  });

  it('collector hanging (accepts, never answers): every export ends by its deadline, shutdown too', async () => {
    const sockets: Socket[] = [];
    const hang: Server = createServer((s) => void sockets.push(s.on('error', () => {})));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const port = (hang.address() as { port: number }).port;
    try {
      const e = make({ endpoint: `http://127.0.0.1:${port}/v1/logs`, timeoutMs: 200, maxQueue: 20, maxBatch: 5 });
      for (let i = 0; i < 100; i++) logConnection(quiet, ok, e);
      expect(e.stats().held).toBe(20);
      await until(() => e.stats().dropped.export_failed >= 5); // the first batch gave up
      expect(e.stats().held).toBeLessThanOrEqual(20);
      expect(add(e.stats())).toBe(100);
      // Shutdown with a hung collector and records queued: back by the deadline (else the test times out).
      await e.shutdown(300);
      logConnection(quiet, ok, e); // after shutdown: ignored, not held
      expect(e.stats().held).toBeLessThanOrEqual(20);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hang.close(() => r()));
    }
  }, 15_000);

  it('a hostile collector: a garbage 200 counts as exported (OTLP: 200 is success); an endless body is cut off, counted', async () => {
    let endless = false;
    const srv = (await import('node:http')).createServer((req, res) => {
      req.resume().on('end', () => {
        res.writeHead(200, { 'content-type': 'application/x-protobuf' });
        if (!endless) return void res.end(Buffer.alloc(1 << 10, 0xff)); // not an ExportLogsServiceResponse
        // 64 MiB, streamed: the exporter stops reading at its response cap (4 MiB), not at the end.
        const chunk = Buffer.alloc(1 << 20, 0xff);
        let n = 0;
        const more = (): void => {
          while (n < 64 && !res.destroyed) {
            n++;
            if (!res.write(chunk)) return void res.once('drain', more);
          }
          if (!res.destroyed) res.end();
        };
        res.on('error', () => {});
        more();
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    try {
      const e = make({ endpoint: `http://127.0.0.1:${port}/v1/logs`, timeoutMs: 2_000 });
      for (let i = 0; i < 3; i++) logConnection(quiet, ok, e);
      await until(() => e.stats().held === 0);
      expect(e.stats()).toEqual({ exported: 3, dropped: { queue_full: 0, export_failed: 0 }, held: 0 });
      endless = true;
      for (let i = 0; i < 3; i++) logConnection(quiet, ok, e);
      await until(() => e.stats().held === 0);
      expect(e.stats()).toEqual({ exported: 3, dropped: { queue_full: 0, export_failed: 3 }, held: 0 });
    } finally {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
