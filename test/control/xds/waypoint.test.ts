// The waypoint an agent must send traffic to reaches it the way everything else does: the model
// builds Service.waypoint and Workload.waypoint, the workload-API publisher encodes them, the Delta
// ADS server sends them over real gRPC, and the agent's client decodes them into its state. Labelling
// a namespace afterwards (an incremental rebuild) changes exactly what it should, and the agent sees it.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { adsService } from '../../../src/api/protos.ts';
import { DeltaXdsClient } from '../../../src/agent/xds/delta-client.ts';
import { LastGoodStore } from '../../../src/control/config/config-store.ts';
import { MeshModelBuilder } from '../../../src/control/model/mesh-model.ts';
import { DEFAULT_MESH } from '../../../src/control/model/networking/workloads.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';
import { WorkloadApiPublisher } from '../../../src/control/xds/workload-api.ts';
import type { KObject } from '../../../src/kube/objects.ts';

const log = pino({ level: 'silent' });
const until = async (f: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
};

const namespace = (name: string, labels?: Record<string, string>): KObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } });
const service = (ns: string, name: string, ip: string, selector: Record<string, string>, port = 80): KObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: ip, selector, ports: [{ port }] } });
const pod = (ns: string, name: string, labels: Record<string, string>, ip: string): KObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels },
  spec: { nodeName: 'node-0', containers: [{ name: 'c', image: 'app' }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
});
const WP = { address: '10.96.9.9', network: '', hboneMtlsPort: 15008 };

describe('waypoints over Delta ADS', () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => cleanup.splice(0).forEach((f) => f()));

  it('an agent decodes Service.waypoint and Workload.waypoint, and follows a namespace being labelled', async () => {
    const objects = new LastGoodStore();
    for (const o of [
      namespace('shop'),
      namespace('bank'),
      { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'wp', namespace: 'shop', labels: { 'istio.io/waypoint-for': 'all' } }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } },
      service('shop', 'wp', '10.96.9.9', { 'gateway.networking.k8s.io/gateway-name': 'wp' }, 15008),
      pod('shop', 'wp-0', { 'gateway.networking.k8s.io/gateway-name': 'wp' }, '10.244.0.9'),
      service('shop', 'web', '10.96.0.1', { app: 'web' }),
      pod('shop', 'web-0', { app: 'web' }, '10.244.0.1'),
      service('bank', 'ledger', '10.96.1.1', { app: 'ledger' }),
      pod('bank', 'ledger-0', { app: 'ledger' }, '10.244.1.1'),
    ] as KObject[])
      objects.put(o);

    const builder = new MeshModelBuilder(DEFAULT_MESH);
    const store = new ResourceStore();
    const publisher = new WorkloadApiPublisher(store);
    let model = builder.build(objects.snapshot([]));
    publisher.publish(model);

    const server = new grpc.Server();
    const ads = new DeltaAdsServer(store, log, {});
    server.addService(adsService().service, { DeltaAggregatedResources: ads.handler(), StreamAggregatedResources: (c: grpc.ServerDuplexStream<unknown, unknown>) => c.end() });
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    cleanup.push(() => server.forceShutdown());
    const client = new DeltaXdsClient({ address: `127.0.0.1:${port}`, nodeId: 'node-0', log });
    cleanup.push(() => client.close());
    client.start();
    await client.whenSynced();

    // Nothing is enrolled yet.
    const state = () => client.state;
    expect(state().servicesByVip.get('10.96.0.1')?.waypoint).toBeUndefined();
    expect(state().workloadsByIp.get('10.244.0.1')?.waypoint).toBeUndefined();

    // Label the namespace: only shop's objects change; bank's namespace model is the same object.
    const bankBefore = model.namespaces.get('bank');
    objects.put(namespace('shop', { 'istio.io/use-waypoint': 'wp' }));
    model = builder.build(objects.snapshot([]));
    expect(model.namespaces.get('bank')).toBe(bankBefore);
    publisher.publish(model);
    await until(() => state().servicesByVip.get('10.96.0.1')?.waypoint !== undefined && state().workloadsByIp.get('10.244.0.1')?.waypoint !== undefined);
    expect(state().servicesByVip.get('10.96.0.1')?.waypoint).toEqual(WP);
    expect(state().workloadsByIp.get('10.244.0.1')?.waypoint).toEqual(WP);
    // The waypoint itself and the other namespace: no waypoint.
    expect(state().servicesByVip.get('10.96.9.9')?.waypoint).toBeUndefined();
    expect(state().workloadsByIp.get('10.244.0.9')?.waypoint).toBeUndefined();
    expect(state().servicesByVip.get('10.96.1.1')?.waypoint).toBeUndefined();
    expect(state().workloadsByIp.get('10.244.1.1')?.waypoint).toBeUndefined();

    // The waypoint's Service goes away: not ready, so the agent is told to stop using it.
    objects.remove('Service/shop/wp');
    publisher.publish(builder.build(objects.snapshot([])));
    await until(() => state().servicesByVip.get('10.96.0.1')?.waypoint === undefined && state().workloadsByIp.get('10.244.0.1')?.waypoint === undefined);
  });
});
