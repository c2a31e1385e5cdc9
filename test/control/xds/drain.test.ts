// Draining ADS servers (StreamSet.drain) over real gRPC: every open stream, of both variants, is
// ended UNAVAILABLE (the status clients reconnect on), not all in the same instant; drain()
// resolves once all have ended, also when a client leaves by itself meanwhile; a stream opened
// while draining is ended at once with nothing sent.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { TYPE_ADDRESS } from '../../../src/api/codec.ts';
import { adsService } from '../../../src/api/protos.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { SotwAdsServer } from '../../../src/control/xds/envoy/sotw-ads.ts';
import { TYPE_CLUSTER } from '../../../src/control/xds/envoy/messages.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';

const log = pino({ level: 'silent' });
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

type Method = 'DeltaAggregatedResources' | 'StreamAggregatedResources';

async function serve() {
  const store = new ResourceStore();
  store.replace(TYPE_CLUSTER, new Map([['c1', new Uint8Array([1])]]));
  store.replace(TYPE_ADDRESS, new Map([['w1', new Uint8Array([2])]]));
  const delta = new DeltaAdsServer(store, log);
  const sotw = new SotwAdsServer(store, log);
  const server = new grpc.Server();
  server.addService(adsService().service, { DeltaAggregatedResources: delta.handler(), StreamAggregatedResources: sotw.handler() });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  cleanups.push(() => server.forceShutdown());
  const Ads = adsService();
  const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<Method, () => grpc.ClientDuplexStream<unknown, unknown>>;
  cleanups.push(() => client.close());
  /** A stream that asked for `typeUrl`; `answered` once a response came, `ended` with its status and when. */
  const open = (method: Method, typeUrl: string) => {
    const call = client[method]();
    call.on('error', () => {});
    let got = 0;
    const answered = new Promise<void>((r) => call.on('data', () => (got++, r())));
    const ended = new Promise<{ code: grpc.status; details: string; at: number }>((r) => call.on('status', (s: grpc.StatusObject) => r({ code: s.code, details: s.details, at: performance.now() })));
    call.write({ node: { id: 'n' }, typeUrl });
    return { call, answered, ended, got: () => got };
  };
  return { delta, sotw, open };
}

const bounded = <T,>(p: Promise<T>, what: string, ms = 5000) => Promise.race([p, new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`timed out: ${what}`)), ms))]);

describe('ADS drain', () => {
  it('ends every stream of both variants UNAVAILABLE, spread out, and resolves when all have ended', async () => {
    const { delta, sotw, open } = await serve();
    const streams = [...Array.from({ length: 6 }, () => open('DeltaAggregatedResources', TYPE_ADDRESS)), ...Array.from({ length: 6 }, () => open('StreamAggregatedResources', TYPE_CLUSTER))];
    await bounded(Promise.all(streams.map((s) => s.answered)), 'first responses');
    expect(delta.connected + sotw.connected).toBe(12);
    await bounded(Promise.all([delta.drain(500), sotw.drain(500)]), 'drain');
    expect(delta.connected + sotw.connected).toBe(0);
    const ends = await bounded(Promise.all(streams.map((s) => s.ended)), 'statuses');
    for (const e of ends) expect(e).toMatchObject({ code: grpc.status.UNAVAILABLE, details: 'control plane replica shutting down; reconnect' });
    // Spread: not one burst of twelve reconnects.
    expect(new Set(ends.map((e) => Math.round(e.at))).size).toBeGreaterThan(1);
  });

  it('a stream opened while draining is ended at once, with nothing sent', async () => {
    const { delta, open } = await serve();
    const first = open('DeltaAggregatedResources', TYPE_ADDRESS);
    await bounded(first.answered, 'first response');
    const drained = delta.drain(2000);
    const late = open('DeltaAggregatedResources', TYPE_ADDRESS);
    expect(await bounded(late.ended, 'the late stream ended')).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(late.got()).toBe(0);
    await bounded(drained, 'drain');
  });

  it('resolves when a client leaves by itself during the spread, and at once with no streams', async () => {
    const { delta, sotw, open } = await serve();
    await bounded(sotw.drain(10_000), 'drain with no streams', 1000);
    const a = open('DeltaAggregatedResources', TYPE_ADDRESS);
    await bounded(a.answered, 'first response');
    const drained = delta.drain(60_000); // its own end would come far too late for this test
    a.call.cancel();
    await bounded(drained, 'drain after the client left', 5000);
    expect(delta.connected).toBe(0);
  });
});
