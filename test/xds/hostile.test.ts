// The generic xDS client against a hostile server: a real gRPC ADS server in this process whose
// streams write what each test says (raw bytes, oversized messages, types nobody asked for, broken
// resources). Nothing may escape the client (no exception, no unhandled rejection), the caller's
// state changes only by a response the client ACKs, and the client keeps going: on the stream
// when the stream survives, by reconnecting when it does not.
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeWorkload, TYPE_ADDRESS } from '../../src/api/codec.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { adsService } from '../../src/api/protos.ts';
import { TYPE_CLUSTER, TYPE_LISTENER, TYPE_ROUTE } from '../../src/control/xds/envoy/messages.ts';
import { XdsClient, type XdsUpdate } from '../../src/xds/client.ts';
import { Cleanup, log, table, until, wl } from './harness.ts';

type Req = Record<string, unknown> & { typeUrl: string; responseNonce: string; errorDetail?: { code: number; message: string } | null };
interface Stream {
  call: grpc.ServerDuplexStream<Req, unknown>;
  requests: Req[];
  ended: boolean;
}

/** An ADS server that records every request and lets the test write anything to a stream. */
async function hostileServer(cleanup: Cleanup) {
  const streams: Stream[] = [];
  const handler = (call: grpc.ServerDuplexStream<Req, unknown>) => {
    const s: Stream = { call, requests: [], ended: false };
    streams.push(s);
    call.on('data', (r: Req) => s.requests.push(r));
    call.on('error', () => {});
    const end = () => (s.ended = true);
    call.on('cancelled', end);
    call.on('end', end);
  };
  const server = new grpc.Server({ 'grpc.max_send_message_length': 64 * 1024 * 1024 });
  server.addService(adsService().service, { DeltaAggregatedResources: handler, StreamAggregatedResources: handler });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  cleanup.add(() => server.forceShutdown());
  const latest = () => streams.at(-1)!;
  return { port, streams, latest, write: (m: unknown) => latest().call.write(m) };
}

/** A DeltaDiscoveryResponse as the server would write it. */
const deltaMsg = (nonce: string, typeUrl: string, resources: { name: string; version: string; value?: Uint8Array; anyType?: string }[], removed: string[] = []) => ({
  typeUrl,
  nonce,
  systemVersionInfo: '1',
  resources: resources.map((r) => ({ name: r.name, version: r.version, resource: r.value && { type_url: r.anyType ?? typeUrl, value: Buffer.from(r.value) } })),
  removedResources: removed,
});
const res = (w: Workload, version = '1') => ({ name: w.uid, version, value: encodeWorkload(w) });
const repliesTo = (s: Stream, nonce: string) => s.requests.filter((r) => r.responseNonce === nonce);

const escaped: unknown[] = [];
const onEscape = (e: unknown) => escaped.push(e);
beforeAll(() => {
  process.on('uncaughtException', onEscape);
  process.on('unhandledRejection', onEscape);
});
afterAll(() => {
  process.off('uncaughtException', onEscape);
  process.off('unhandledRejection', onEscape);
});

describe('XdsClient against a hostile server', () => {
  const cleanup = new Cleanup();
  afterEach(() => {
    cleanup.run();
    expect(escaped.splice(0)).toEqual([]);
  });

  /** A Delta client of workloads connected to a hostile server, holding workload a at version 1. */
  async function synced(o: { maxResponseBytes?: number } = {}) {
    const srv = await hostileServer(cleanup);
    const t = table();
    const c = new XdsClient({ address: `127.0.0.1:${srv.port}`, nodeId: 'victim', log, watches: [{ typeUrl: TYPE_ADDRESS, apply: (u) => t.apply(u) }], ...o });
    cleanup.add(() => c.close());
    c.start();
    await until(() => srv.streams.length === 1 && srv.latest().requests.length === 1, 'the first request');
    srv.write(deltaMsg('n1', TYPE_ADDRESS, [res(wl('a', '10.0.0.1'))]));
    await c.whenSynced();
    await until(() => repliesTo(srv.latest(), 'n1').length === 1, 'the ACK');
    return { srv, t, c };
  }

  it('a response that does not parse ends the stream: state kept, reconnect with the versions held', async () => {
    const { srv, t, c } = await synced();
    srv.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])); // a length past the end
    await until(() => srv.streams.length === 2 && srv.latest().requests.length === 1, 'the reconnect', 20_000);
    expect(c.lastError).toMatch(/INTERNAL|parse/i);
    expect(t.ips()).toEqual(['10.0.0.1']);
    expect(srv.latest().requests[0]).toMatchObject({ typeUrl: TYPE_ADDRESS, resourceNamesSubscribe: ['*'], initialResourceVersions: { [wl('a', '').uid]: '1' } });
    // The new stream works.
    srv.write(deltaMsg('n2', TYPE_ADDRESS, [res(wl('b', '10.0.0.2'))]));
    await until(() => t.held.size === 2, 'the next response');
    expect(repliesTo(srv.latest(), 'n2')).toEqual([expect.objectContaining({ errorDetail: null })]);
  });

  it('a response over the size limit ends the stream: state kept, reconnect', async () => {
    const { srv, t, c } = await synced({ maxResponseBytes: 64 * 1024 });
    const big = Array.from({ length: 600 }, (_, i) => res({ ...wl(`w${i}`, `10.1.${i >> 8}.${i & 255}`), workloadName: 'x'.repeat(100) }));
    srv.write(deltaMsg('big', TYPE_ADDRESS, big));
    await until(() => srv.streams.length === 2, 'the reconnect', 20_000);
    expect(c.lastError).toMatch(/RESOURCE_EXHAUSTED/);
    expect(t.ips()).toEqual(['10.0.0.1']);
    expect(repliesTo(srv.streams[0]!, 'big')).toEqual([]);
  });

  it('a response over grpc-js default limit (4 MiB) does the same with no limit configured', async () => {
    const { srv, t, c } = await synced();
    srv.write(deltaMsg('huge', TYPE_ADDRESS, [{ name: 'huge', version: '1', value: Buffer.alloc(5 * 1024 * 1024, 1) }]));
    await until(() => srv.streams.length === 2, 'the reconnect', 20_000);
    expect(c.lastError).toMatch(/RESOURCE_EXHAUSTED/);
    expect(t.ips()).toEqual(['10.0.0.1']);
  });

  it('a response of a type not watched is ignored: no reply, no state change, the stream goes on', async () => {
    const { srv, t, c } = await synced();
    const updates: XdsUpdate[] = [];
    c.on('update', (_t: string, u: XdsUpdate) => updates.push(u));
    srv.write(deltaMsg('u1', TYPE_LISTENER, [{ name: wl('x', '').uid, version: '9', value: encodeWorkload(wl('x', '10.6.6.6')) }], [wl('a', '').uid]));
    srv.write(deltaMsg('u2', `type.googleapis.com/${'x'.repeat(100_000)}`, [res(wl('y', '10.6.6.7'))]));
    srv.write(deltaMsg('u3', '', [res(wl('z', '10.6.6.8'))]));
    srv.write(deltaMsg('n2', TYPE_ADDRESS, [res(wl('b', '10.0.0.2'))]));
    await until(() => repliesTo(srv.latest(), 'n2').length === 1, 'the ACK of the good response');
    expect(['u1', 'u2', 'u3'].flatMap((n) => repliesTo(srv.latest(), n))).toEqual([]);
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(updates.map((u) => u.typeUrl)).toEqual([TYPE_ADDRESS]);
    expect(c.versions(TYPE_LISTENER).size).toBe(0);
    expect(srv.streams).toHaveLength(1);
    expect(c.nacks).toBe(0);
  });

  it('NACKs a resource with no body or one the caller cannot decode, keeping state and versions', async () => {
    const { srv, t, c } = await synced();
    srv.write(deltaMsg('e1', TYPE_ADDRESS, [res(wl('b', '10.0.0.2')), { name: 'bodiless', version: '2' }], [wl('a', '').uid]));
    srv.write(deltaMsg('e2', TYPE_ADDRESS, [res(wl('b', '10.0.0.2')), { name: 'garbage', version: '2', value: Buffer.from([0xff, 0xff, 0xff]) }], [wl('a', '').uid]));
    await until(() => c.nacks === 2, 'two NACKs');
    const s = srv.latest();
    expect(repliesTo(s, 'e1')[0]!.errorDetail).toEqual(expect.objectContaining({ code: 3, message: 'resource bodiless: empty' }));
    expect(repliesTo(s, 'e2')[0]!.errorDetail?.message).toBeTruthy();
    expect(t.ips()).toEqual(['10.0.0.1']);
    expect(c.versions(TYPE_ADDRESS)).toEqual(new Map([[wl('a', '').uid, '1']]));
    expect(srv.streams).toHaveLength(1);
  });

  it('Delta: NACKs a resource without a name, a name sent twice and an Any of another type; leaves out names not subscribed', async () => {
    const srv = await hostileServer(cleanup);
    const t = table();
    const c = new XdsClient({ address: `127.0.0.1:${srv.port}`, nodeId: 'victim', log, watches: [{ typeUrl: TYPE_ADDRESS, names: [wl('a', '').uid, wl('b', '').uid], apply: (u) => t.apply(u) }] });
    cleanup.add(() => c.close());
    c.start();
    await until(() => srv.streams.length === 1 && srv.latest().requests.length === 1, 'the first request');
    srv.write(deltaMsg('d1', TYPE_ADDRESS, [res(wl('a', '10.0.0.1'))]));
    await c.whenSynced();
    srv.write(deltaMsg('d2', TYPE_ADDRESS, [res(wl('b', '10.0.0.2')), { ...res(wl('b', '10.0.0.2')), name: '' }]));
    srv.write(deltaMsg('d3', TYPE_ADDRESS, [res(wl('b', '10.0.0.2')), res(wl('b', '10.0.0.3'))]));
    srv.write(deltaMsg('d4', TYPE_ADDRESS, [{ ...res(wl('b', '10.0.0.2')), anyType: TYPE_LISTENER }]));
    srv.write(deltaMsg('d5', TYPE_ADDRESS, [res(wl('b', '10.0.0.2')), res(wl('unasked', '10.0.0.9'))]));
    await until(() => repliesTo(srv.latest(), 'd5').length === 1, 'the reply to the last');
    const s = srv.latest();
    expect(repliesTo(s, 'd2')[0]!.errorDetail?.message).toBe('a resource without a name');
    expect(repliesTo(s, 'd3')[0]!.errorDetail?.message).toBe(`resource ${wl('b', '').uid}: sent twice`);
    expect(repliesTo(s, 'd4')[0]!.errorDetail?.message).toBe(`resource ${wl('b', '').uid}: of type ${TYPE_LISTENER} in a response for ${TYPE_ADDRESS}`);
    expect(repliesTo(s, 'd5')[0]!.errorDetail).toBeNull();
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(c.nacks).toBe(3);
  });

  it('Delta: drops a name the subscription no longer has at once, without waiting for the server', async () => {
    const srv = await hostileServer(cleanup);
    const t = table();
    const c = new XdsClient({ address: `127.0.0.1:${srv.port}`, nodeId: 'victim', log, watches: [{ typeUrl: TYPE_ROUTE, names: ['r1', 'r2'], apply: (u) => t.apply(u) }] });
    cleanup.add(() => c.close());
    c.start();
    await until(() => srv.streams.length === 1 && srv.latest().requests.length === 1, 'the first request');
    srv.write(deltaMsg('r-1', TYPE_ROUTE, [res(wl('r1', '10.0.0.1')), res(wl('r2', '10.0.0.2'))].map((r, i) => ({ ...r, name: `r${i + 1}` }))));
    await c.whenSynced();
    expect([...t.held.keys()]).toEqual(['r1', 'r2']);
    c.subscribe(TYPE_ROUTE, ['r2', 'r3']);
    expect([...t.held.keys()]).toEqual(['r2']); // the server never says r1 is removed
    expect(c.versions(TYPE_ROUTE)).toEqual(new Map([['r2', '1']]));
    await until(() => srv.latest().requests.length === 3, 'the new subscription');
    expect(srv.latest().requests[2]).toMatchObject({ typeUrl: TYPE_ROUTE, resourceNamesSubscribe: ['r3'], resourceNamesUnsubscribe: ['r1'] });
  });

  it('answers every response of mutated bodies with one ACK or NACK, and holds only what it ACKed', async () => {
    const { srv, t, c } = await synced();
    let seed = 11;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const acked = new Map<string, string>([[wl('a', '').uid, '10.0.0.1']]);
    const replies = { ack: 0, nack: 0 };
    for (let i = 0; i < 60; i++) {
      const w = wl(`m${rand(5)}`, `10.2.0.${i}`);
      const body = Buffer.from(encodeWorkload(w));
      const mutated = rand(3) === 0 ? body : rand(2) ? body.subarray(0, rand(body.length)) : Buffer.from(body.map((b, j) => (j === rand(body.length) ? rand(256) : b)));
      const nonce = `m-${i}`;
      const before = new Map(t.held);
      srv.write(deltaMsg(nonce, TYPE_ADDRESS, [{ name: w.uid, version: String(i), value: mutated }]));
      await until(() => repliesTo(srv.latest(), nonce).length === 1, `the reply to ${nonce}`);
      const reply = repliesTo(srv.latest(), nonce)[0]!;
      replies[reply.errorDetail ? 'nack' : 'ack']++;
      if (reply.errorDetail) expect(t.held).toEqual(before);
      else {
        expect(c.versions(TYPE_ADDRESS).get(w.uid)).toBe(String(i));
        acked.set(w.uid, t.held.get(w.uid)!.addresses[0]!);
      }
    }
    expect(new Map([...t.held].map(([n, x]) => [n, x.addresses[0]]))).toEqual(acked);
    expect(replies.ack).toBeGreaterThan(20); // the unmutated ones at least
    expect(replies.nack).toBeGreaterThan(5);
    expect(c.nacks).toBe(replies.nack);
    expect(srv.streams).toHaveLength(1);
  });
});

describe('XdsClient (SotW) against a hostile server', () => {
  const cleanup = new Cleanup();
  afterEach(() => {
    cleanup.run();
    expect(escaped.splice(0)).toEqual([]);
  });

  it('NACKs a resource of another type, a name sent twice and a body it cannot name; ignores other types', async () => {
    const srv = await hostileServer(cleanup);
    const held = new Map<string, string>();
    const apply = (u: XdsUpdate) => {
      for (const r of u.resources) held.set(r.name, Buffer.from(r.body).toString());
      for (const n of u.removed) held.delete(n);
    };
    // A toy resource: its body is its name; a body starting with '!' cannot be named.
    const nameOf = (b: Uint8Array) => {
      const s = Buffer.from(b).toString();
      if (s.startsWith('!')) throw new Error(`cannot name ${s}`);
      return s;
    };
    const c = new XdsClient({ address: `127.0.0.1:${srv.port}`, nodeId: 'victim', mode: 'sotw', log, watches: [{ typeUrl: TYPE_CLUSTER, nameOf, apply }] });
    cleanup.add(() => c.close());
    c.start();
    await until(() => srv.streams.length === 1 && srv.latest().requests.length === 1, 'the first request');
    expect(srv.latest().requests[0]).toMatchObject({ typeUrl: TYPE_CLUSTER, resourceNames: [], node: expect.objectContaining({ id: 'victim' }) });
    const any = (s: string, typeUrl = TYPE_CLUSTER) => ({ type_url: typeUrl, value: Buffer.from(s) });
    const sotw = (nonce: string, version: string, resources: unknown[], typeUrl = TYPE_CLUSTER) => srv.write({ typeUrl, nonce, versionInfo: version, resources });
    sotw('s1', 'v1', [any('c1'), any('c2')]);
    await c.whenSynced();
    sotw('s2', 'v2', [any('c1'), any('c3', TYPE_LISTENER)]);
    sotw('s3', 'v3', [any('c1'), any('c1')]);
    sotw('s4', 'v4', [any('c1'), any('!x')]);
    sotw('s5', 'v5', [any('c9')], TYPE_LISTENER);
    sotw('s6', 'v6', [any('c2')]); // full state: c1 removed
    await until(() => repliesTo(srv.latest(), 's6').length === 1, 'the reply to the last');
    const s = srv.latest();
    for (const n of ['s2', 's3', 's4']) {
      const [r] = repliesTo(s, n);
      expect(r).toMatchObject({ versionInfo: 'v1', errorDetail: expect.objectContaining({ code: 3 }) }); // the version accepted before
    }
    expect(repliesTo(s, 's3')[0]!.errorDetail!.message).toBe('resource c1: sent twice');
    expect(repliesTo(s, 's4')[0]!.errorDetail!.message).toBe('cannot name !x');
    expect(repliesTo(s, 's5')).toEqual([]);
    expect(repliesTo(s, 's6')[0]).toMatchObject({ versionInfo: 'v6', errorDetail: null });
    expect([...held.keys()]).toEqual(['c2']);
    expect(c.nacks).toBe(3);
  });

  it('leaves out resources not subscribed to, and drops a named one the subscription no longer has', async () => {
    const srv = await hostileServer(cleanup);
    const held = new Map<string, string>();
    const applied: XdsUpdate[] = [];
    const apply = (u: XdsUpdate) => {
      applied.push(u);
      for (const r of u.resources) held.set(r.name, r.version);
      for (const n of u.removed) held.delete(n);
    };
    const nameOf = (b: Uint8Array) => Buffer.from(b).toString();
    const c = new XdsClient({ address: `127.0.0.1:${srv.port}`, nodeId: 'victim', mode: 'sotw', log, watches: [{ typeUrl: TYPE_ROUTE, names: ['r1', 'r2'], nameOf, apply }] });
    cleanup.add(() => c.close());
    c.start();
    await until(() => srv.streams.length === 1 && srv.latest().requests.length === 1, 'the first request');
    expect(srv.latest().requests[0]).toMatchObject({ typeUrl: TYPE_ROUTE, resourceNames: ['r1', 'r2'] });
    const any = (s: string) => ({ type_url: TYPE_ROUTE, value: Buffer.from(s) });
    srv.write({ typeUrl: TYPE_ROUTE, nonce: 'r-1', versionInfo: 'v1', resources: [any('r1'), any('r2'), any('unasked')] });
    await c.whenSynced();
    expect([...held.keys()]).toEqual(['r1', 'r2']);
    // Routes come one at a time: one left out of a response is not removed.
    srv.write({ typeUrl: TYPE_ROUTE, nonce: 'r-2', versionInfo: 'v2', resources: [any('r2')] });
    await until(() => repliesTo(srv.latest(), 'r-2').length === 1, 'the ACK');
    expect(held).toEqual(new Map([['r1', 'v1'], ['r2', 'v2']]));
    c.subscribe(TYPE_ROUTE, ['r2']);
    expect(held).toEqual(new Map([['r2', 'v2']]));
    expect(applied.at(-1)).toMatchObject({ resources: [], removed: ['r1'] });
    await until(() => srv.latest().requests.length === 4, 'the new subscription');
    expect(srv.latest().requests[3]).toMatchObject({ typeUrl: TYPE_ROUTE, resourceNames: ['r2'], versionInfo: 'v2', responseNonce: 'r-2' });
  });
});
