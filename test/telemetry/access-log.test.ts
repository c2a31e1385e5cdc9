// The access-log line is built from a connection record alone (any proxy can write it): the
// fields, their order, and which of them appear, as operators' log queries expect them.
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../src/api/mesh.ts';
import { logConnection } from '../../src/telemetry/access-log.ts';
import { elapsedMs, type ConnectionRecord } from '../../src/telemetry/connection.ts';

const wl = (name: string, namespace: string): Workload => ({
  uid: `Kubernetes//Pod/${namespace}/${name}`, name, namespace, addresses: ['10.244.1.2'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: name,
  node: 'node-1', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const svc: Service = { name: 'cart', namespace: 'shop', hostname: 'cart.shop.svc.cluster.local', addresses: ['10.96.0.5'], ports: [], subjectAltNames: [] };
const buyer = wl('buyer', 'shop');
const cart = wl('cart', 'shop');

const base: ConnectionRecord = { direction: 'outbound', pod: 'shop/buyer', srcAddr: '10.244.1.2:40000', transport: 'tcp', sent: 0, received: 0, durationMs: 1.25 };

describe('access log', () => {
  const cases: { name: string; record: ConnectionRecord; want: Record<string, unknown> }[] = [
    {
      name: 'HBONE through a service, both identities',
      record: {
        ...base, srcWorkload: buyer, srcIdentity: 'spiffe://cluster.local/ns/shop/sa/buyer', dstAddr: '10.244.2.3:8080', hboneAddr: '10.244.2.3:15008', service: svc,
        dstWorkload: cart, dstIdentity: 'spiffe://cluster.local/ns/shop/sa/cart', transport: 'hbone', sent: 10, received: 20,
      },
      want: {
        direction: 'outbound', pod: 'shop/buyer', 'src.addr': '10.244.1.2:40000', 'src.workload': 'buyer', 'src.namespace': 'shop', 'src.identity': 'spiffe://cluster.local/ns/shop/sa/buyer',
        'dst.addr': '10.244.2.3:8080', 'dst.hbone_addr': '10.244.2.3:15008', 'dst.service': 'cart.shop.svc.cluster.local', 'dst.workload': 'cart', 'dst.namespace': 'shop',
        'dst.identity': 'spiffe://cluster.local/ns/shop/sa/cart', protocol: 'HBONE', bytes_sent: 10, bytes_recv: 20, duration_ms: 1.25,
      },
    },
    {
      name: 'node-local, with AUDIT matches',
      record: { ...base, direction: 'inbound', pod: 'shop/cart', dstAddr: '10.244.1.3:8080', transport: 'node_local', sent: 1, received: 2, audit: ['shop/audit'] },
      want: { direction: 'inbound', pod: 'shop/cart', 'src.addr': '10.244.1.2:40000', 'dst.addr': '10.244.1.3:8080', node_local: true, protocol: 'node-local', bytes_sent: 1, bytes_recv: 2, duration_ms: 1.25, audit: ['shop/audit'] },
    },
    {
      name: 'denied: error, response flag and policy',
      record: { ...base, direction: 'inbound', error: 'denied by authorization policy', responseFlags: 'DENY', policy: 'shop/deny-all', audit: [] },
      want: { direction: 'inbound', pod: 'shop/buyer', 'src.addr': '10.244.1.2:40000', protocol: 'TCP', bytes_sent: 0, bytes_recv: 0, duration_ms: 1.25, error: 'denied by authorization policy', response_flags: 'DENY', policy: 'shop/deny-all' },
    },
    {
      name: 'a response flag without an error is not written',
      record: { ...base, responseFlags: 'NR' },
      want: { direction: 'outbound', pod: 'shop/buyer', 'src.addr': '10.244.1.2:40000', protocol: 'TCP', bytes_sent: 0, bytes_recv: 0, duration_ms: 1.25 },
    },
  ];

  it.each(cases)('$name', ({ record, want }) => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), cb()) });
    logConnection(pino({ base: undefined, timestamp: false }, sink), record);
    expect(lines).toHaveLength(1);
    const { level, msg, ...fields } = lines[0]!;
    expect(fields).toEqual(want);
    expect(Object.keys(fields)).toEqual(Object.keys(want)); // the order written
    expect([level, msg]).toEqual(record.error ? [40, 'connection failed'] : [30, 'connection complete']);
  });

  it('measures the duration to 10 µs', () => {
    const ms = elapsedMs(process.hrtime.bigint() - 12_345_678n);
    expect(ms).toBeGreaterThanOrEqual(12.35);
    expect(Math.round(ms * 100)).toBeCloseTo(ms * 100, 6);
  });
});
