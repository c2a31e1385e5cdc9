// Stream scoping (src/control/xds/streams.ts) on both ADS variants over real gRPC: a scoped caller
// (a workload credential) asking for a type outside its scope, an empty type URL included, has its
// stream ended PERMISSION_DENIED naming the type, after what it was allowed and before anything of
// the forbidden type is sent; the refusal is reported once however many forbidden requests follow.
// An unscoped caller (a node agent) is served every type, as before.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { TYPE_ADDRESS } from '../../../src/api/codec.ts';
import { adsService } from '../../../src/api/protos.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { SotwAdsServer } from '../../../src/control/xds/envoy/sotw-ads.ts';
import { TYPE_CLUSTER } from '../../../src/control/xds/envoy/messages.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';
import type { Authorize, ScopedCaller } from '../../../src/control/xds/streams.ts';

const log = pino({ level: 'silent' });
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

type Method = 'DeltaAggregatedResources' | 'StreamAggregatedResources';

async function serve(authorize: Authorize) {
  const store = new ResourceStore();
  store.replace(TYPE_CLUSTER, new Map([['c1', new Uint8Array([1])]]));
  store.replace(TYPE_ADDRESS, new Map([['w1', new Uint8Array([2])]])); // opaque to the server
  const server = new grpc.Server();
  server.addService(adsService().service, {
    DeltaAggregatedResources: new DeltaAdsServer(store, log).handler(authorize),
    StreamAggregatedResources: new SotwAdsServer(store, log).handler(authorize),
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  cleanups.push(() => server.forceShutdown());
  return port;
}

/** Writes `requests` on one stream; resolves to the type URLs of the responses and the status it ended with (or 'open' after 1.5 s). */
async function exchange(port: number, method: Method, requests: { typeUrl: string }[]) {
  const Ads = adsService();
  const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<Method, () => grpc.ClientDuplexStream<unknown, unknown>>;
  cleanups.push(() => client.close());
  const call = client[method]();
  const got: string[] = [];
  call.on('data', (r: { typeUrl: string }) => got.push(r.typeUrl));
  call.on('error', () => {});
  const ended = new Promise<grpc.StatusObject | 'open'>((r) => {
    call.on('status', r);
    setTimeout(() => r('open'), 1500);
  });
  for (const q of requests) call.write({ node: { id: 'n' }, ...q });
  const status = await ended;
  call.cancel();
  return { got, status };
}

const scoped = (denied: string[]): Authorize => async () =>
  ({ who: 'workload shop/waypoint', types: new Set([TYPE_CLUSTER]), why: 'Envoy config only', onDenied: (t) => void denied.push(t) }) satisfies ScopedCaller;

describe('ADS stream scoping', () => {
  for (const method of ['DeltaAggregatedResources', 'StreamAggregatedResources'] as const) {
    it(`${method}: an allowed type is served, a forbidden one ends the stream PERMISSION_DENIED, reported once`, async () => {
      const denied: string[] = [];
      const port = await serve(scoped(denied));
      const r = await exchange(port, method, [{ typeUrl: TYPE_CLUSTER }, { typeUrl: TYPE_ADDRESS }, { typeUrl: TYPE_ADDRESS }]);
      expect(r.status).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: `workload shop/waypoint may not subscribe to type ${TYPE_ADDRESS}: Envoy config only` });
      expect(r.got).toEqual([TYPE_CLUSTER]); // served before the refusal; nothing of the forbidden type
      expect(denied).toEqual([TYPE_ADDRESS]);
    });

    it(`${method}: an empty type URL is refused too`, async () => {
      const denied: string[] = [];
      const r = await exchange(await serve(scoped(denied)), method, [{ typeUrl: '' }]);
      expect(r.status).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'workload shop/waypoint may not subscribe to an empty type URL: Envoy config only' });
      expect(r.got).toEqual([]);
      expect(denied).toEqual(['']);
    });

    it(`${method}: an unscoped caller (a node) gets every type`, async () => {
      const r = await exchange(await serve(async () => 'node-1'), method, [{ typeUrl: TYPE_CLUSTER }, { typeUrl: TYPE_ADDRESS }]);
      expect(r.status).toBe('open');
      expect(r.got).toEqual([TYPE_CLUSTER, TYPE_ADDRESS]);
    });
  }
});

describe('ADS stream lifecycle', () => {
  it('a stream the client cancels while it is being authorized is never counted as connected', async () => {
    const store = new ResourceStore();
    const delta = new DeltaAdsServer(store, log);
    let release!: (who: string) => void;
    const authorizing = new Promise<string>((r) => (release = r));
    let asked = false;
    const server = new grpc.Server();
    server.addService(adsService().service, {
      DeltaAggregatedResources: delta.handler(() => ((asked = true), authorizing)),
      StreamAggregatedResources: new SotwAdsServer(store, log).handler(),
    });
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    cleanups.push(() => server.forceShutdown());
    const Ads = adsService();
    const client = new Ads(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<Method, () => grpc.ClientDuplexStream<unknown, unknown>>;
    cleanups.push(() => client.close());
    const call = client.DeltaAggregatedResources();
    call.on('error', () => {});
    call.write({ node: { id: 'n' }, typeUrl: TYPE_ADDRESS });
    for (let i = 0; !asked && i < 200; i++) await new Promise((r) => setTimeout(r, 10));
    expect(asked).toBe(true);
    call.cancel();
    await new Promise((r) => setTimeout(r, 200)); // the cancellation reaches the server
    release('node-1'); // authorized only now, after the client left
    await new Promise((r) => setTimeout(r, 50));
    expect(delta.connected).toBe(0);
  });
});
