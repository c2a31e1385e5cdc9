// Delta ADS between the control plane's server and the agent's client, over real gRPC.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeService, encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../../src/api/codec.ts';
import type { Workload } from '../../../src/api/mesh.ts';
import { adsService } from '../../../src/api/protos.ts';
import { DeltaXdsClient } from '../../../src/agent/xds/delta-client.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';

const log = pino({ level: 'silent' });
const wl = (name: string, ip: string): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: [ip], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-0', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: { 'ns/echo.ns.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] }, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const until = async (f: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('Delta ADS', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => cleanup.splice(0).forEach((f) => f()));

  async function serve(store: ResourceStore, events = {}) {
    const server = new grpc.Server();
    const ads = new DeltaAdsServer(store, log, events);
    server.addService(adsService().service, { DeltaAggregatedResources: ads.handler(), StreamAggregatedResources: (c: grpc.ServerDuplexStream<unknown, unknown>) => c.end() });
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    cleanup.push(() => server.forceShutdown());
    return { server, ads, port };
  }

  it('syncs workloads and services, then sends only changes and removals', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))], ['ns/echo.ns.svc.cluster.local', encodeService({ name: 'echo', namespace: 'ns', hostname: 'echo.ns.svc.cluster.local', addresses: ['10.96.0.10'], ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [] })]]));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const { port } = await serve(store);
    const client = new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: 'node-0', log });
    cleanup.push(() => client.close());
    client.start();
    await client.whenSynced();
    expect(client.state.workloadsByIp.get('10.0.0.1')?.name).toBe('a');
    expect(client.state.servicesByVip.get('10.96.0.10')?.hostname).toBe('echo.ns.svc.cluster.local');
    expect(client.state.endpoints.get('ns/echo.ns.svc.cluster.local')?.map((w) => w.name)).toEqual(['a']);
    let updates = 0;
    client.on('update', () => updates++);
    store.replace(TYPE_ADDRESS, new Map([[wl('b', '10.0.0.2').uid, encodeWorkload(wl('b', '10.0.0.2'))]]));
    await until(() => client.state.workloadsByIp.has('10.0.0.2'));
    expect(client.state.workloadsByIp.has('10.0.0.1')).toBe(false);
    expect(client.state.services.size).toBe(0);
    expect(updates).toBe(1);
  });

  it('keeps every client equal to the store through churn: clients present throughout, joining midway, and holding a subset', async () => {
    const store = new ResourceStore();
    const names = Array.from({ length: 40 }, (_, i) => `w${i}`);
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const body = (name: string, ip: number) => encodeWorkload(wl(name, `10.0.${ip >> 8}.${ip & 255}`));
    const truth = new Map<string, number>(); // name -> ip
    const churn = () => {
      const set = new Map<string, Uint8Array>();
      const remove: string[] = [];
      for (let k = 0; k < 5; k++) {
        const n = names[rand(names.length)]!;
        const uid = wl(n, '').uid;
        if (rand(3) === 0) {
          truth.delete(n);
          set.delete(uid);
          remove.push(uid);
        } else {
          const ip = 1 + rand(60000);
          truth.set(n, ip);
          set.set(uid, body(n, ip));
        }
      }
      store.patch(TYPE_ADDRESS, set, remove);
    };
    churn(); // most names appear only after the first clients synced
    store.replace(TYPE_AUTHORIZATION, new Map());
    const { port } = await serve(store);
    const client = (id: string) => {
      const c = new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: id, log });
      cleanup.push(() => c.close());
      c.start();
      return c;
    };
    const early = [client('early-0'), client('early-1')];
    await Promise.all(early.map((c) => c.whenSynced()));
    const matches = (c: DeltaXdsClient) =>
      c.state.workloads.size === truth.size && [...truth].every(([n, ip]) => c.state.workloads.get(wl(n, '').uid)?.addresses[0] === `10.0.${ip >> 8}.${ip & 255}`);
    let late: DeltaXdsClient | undefined;
    for (let round = 0; round < 30; round++) {
      churn();
      if (round === 10) late = client('late');
      if (round % 5 === 0) await until(() => early.every(matches));
    }
    await late!.whenSynced();
    await until(() => [...early, late!].every(matches));
    // The server's view: what each stream holds is exactly what the store has.
    expect(store.get(TYPE_ADDRESS).size).toBe(truth.size);
  });

  it('sends large first syncs a few at a time, and a change queued behind one arrives after it', async () => {
    // ~3,000 workloads: each first response is over the gate's 256 KiB, so with 6 agents at once
    // two wait for an ACK before theirs is written.
    const many = (status: Workload['status']) => new Map(Array.from({ length: 3000 }, (_, i) => { const w = { ...wl(`w${i}`, `10.1.${i >> 8}.${i & 255}`), status }; return [w.uid, encodeWorkload(w)] as const; }));
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, many('HEALTHY'));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const { port } = await serve(store);
    const clients = Array.from({ length: 6 }, (_, i) => new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: `node-${i}`, log }));
    for (const c of clients) {
      cleanup.push(() => c.close());
      c.start();
    }
    // Once the first agent holds its sync, others are still queued at the gate: change everything.
    await until(() => clients.some((c) => c.state.workloads.size > 0));
    store.replace(TYPE_ADDRESS, many('UNHEALTHY'));
    await until(() => clients.every((c) => c.state.workloads.size === 3000 && [...c.state.workloads.values()].every((w) => w.status === 'UNHEALTHY')), 20_000);
  });

  it('NACKs a resource it cannot decode and keeps the last good state; the server counts it', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))]]));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const nacks: string[] = [];
    const { port } = await serve(store, { onNack: (_t: string, _n: string, reason: string) => nacks.push(reason) });
    const client = new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: 'node-0', log });
    cleanup.push(() => client.close());
    client.start();
    await client.whenSynced();
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))], ['broken', Buffer.from([0xff, 0xff, 0xff])]]));
    await until(() => nacks.length > 0);
    expect(client.nacks).toBe(1);
    expect(client.state.workloadsByIp.get('10.0.0.1')?.name).toBe('a');
    expect(client.state.workloads.has('broken')).toBe(false);
  });

  it('resumes after a reconnect from the versions it holds, serving its last state meanwhile', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))]]));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const first = await serve(store);
    const client = new DeltaXdsClient({ address: `127.0.0.1:${first.port}`, nodeId: 'node-0', log });
    cleanup.push(() => client.close());
    client.start();
    await client.whenSynced();
    first.server.forceShutdown();
    await until(() => !client.connected);
    expect(client.state.workloadsByIp.get('10.0.0.1')?.name).toBe('a'); // last good state
    // The control plane comes back on the same port with one more workload.
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))], [wl('c', '10.0.0.3').uid, encodeWorkload(wl('c', '10.0.0.3'))]]));
    const server = new grpc.Server();
    const ads = new DeltaAdsServer(store, log);
    server.addService(adsService().service, { DeltaAggregatedResources: ads.handler(), StreamAggregatedResources: (c: grpc.ServerDuplexStream<unknown, unknown>) => c.end() });
    await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${first.port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    cleanup.push(() => server.forceShutdown());
    await until(() => client.state.workloadsByIp.has('10.0.0.3'), 40_000);
    expect(client.state.workloadsByIp.get('10.0.0.1')?.name).toBe('a');
    expect(ads.clients()[0]!.types[TYPE_ADDRESS]).toBe(2);
  }, 60_000);
});
