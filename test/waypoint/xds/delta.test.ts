// The waypoint takes its configuration over Delta ADS (the harness's real control plane): LDS and
// CDS as wildcards, RDS and EDS by the names listeners and clusters give, following them as
// services come and go (removed_resources, unsubscribing what no longer is named); a resource it
// cannot serve is NACKed with a reason naming the resource and field, the last good routing stays,
// and the next good version is taken. Across a control plane restart it keeps its table, and the
// new server sends only what changed meanwhile (initial_resource_versions).
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { adsService } from '../../../src/api/protos.ts';
import type { KObject } from '../../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../../src/control/model/networking/workloads.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { buildEnvoyResources, publishEnvoyResources } from '../../../src/control/xds/envoy/build.ts';
import { encode } from '../../../src/control/xds/envoy/messages.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';
import type { XdsUpdate } from '../../../src/xds/client.ts';
import { TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../../src/waypoint/xds/envoy.ts';
import { WaypointConfig } from '../../../src/waypoint/xds/config.ts';
import { Cleanup, HOST, NS, POD_IP, client, istio, stand, subsets, until, webPod, webService, type Stand } from '../harness.ts';

const routes = () =>
  istio('VirtualService', 'web', {
    hosts: ['web'],
    http: [
      { name: 'canary', match: [{ headers: { 'x-canary': { exact: 'yes' } } }], route: [{ destination: { host: 'web', subset: 'v2' } }] },
      { name: 'rest', route: [{ destination: { host: 'web', subset: 'v1' } }] },
    ],
  });
const base = () => [webService(), webPod('v1'), webPod('v2'), subsets(), routes()];

const API = `api.${NS}.svc.cluster.local`;
const api = (): KObject[] => [
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'api', namespace: NS }, spec: { selector: { app: 'api' }, clusterIP: '10.96.0.30', ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
  {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: 'api-0', namespace: NS, labels: { app: 'api' } },
    spec: { containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: '10.10.0.3', conditions: [{ type: 'Ready', status: 'True' }] },
  },
];

/** What the control plane's Delta server sees the waypoint subscribed to, by type. */
const subscribed = (s: Stand) => {
  const clients = s.cp.delta.subscriptions().filter((c) => c.node.startsWith('waypoint~'));
  expect(clients).toHaveLength(1);
  return clients[0]!.types;
};
const sorted = (v: string[] | '*' | undefined) => (Array.isArray(v) ? [...v].sort() : v);

describe('waypoint over Delta ADS', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  it('subscribes as Envoy does and follows listeners and clusters as they come and go', async () => {
    const s = await stand(cleanup, base());
    expect(s.cp.sotw.connected).toBe(0);
    const web = [`outbound|80||${HOST}`, `outbound|80|v1|${HOST}`, `outbound|80|v2|${HOST}`].sort();
    expect(subscribed(s)[TYPE_LISTENER]!.subscribed).toBe('*');
    expect(subscribed(s)[TYPE_CLUSTER]!.subscribed).toBe('*');
    expect(subscribed(s)[TYPE_ROUTE]!.subscribed).toEqual([`${HOST}:80`]);
    expect(sorted(subscribed(s)[TYPE_ENDPOINT]!.subscribed)).toEqual(web);

    // A second service: its listener names a route configuration, its cluster an EDS name; both followed.
    s.apply([...base(), ...api()]);
    await until(() => s.config.table.routes.has(`${API}:80`) && (s.config.table.endpoints.get(`outbound|80||${API}`)?.length ?? 0) === 1, 10_000, 'api routes and endpoints');
    expect(s.config.table.endpoints.get(`outbound|80||${API}`)).toEqual([{ address: '10.10.0.3', port: 8080 }]);
    await until(() => (subscribed(s)[TYPE_ROUTE]!.subscribed as string[]).length === 2, 5000, 'RDS names at the server');
    expect(sorted(subscribed(s)[TYPE_ENDPOINT]!.subscribed)).toEqual([`outbound|80||${API}`, ...web].sort());

    // Gone: removed from every table, and no longer subscribed to.
    s.apply(base());
    const t = () => s.config.table;
    await until(() => !t().listeners.has(`${API}:80`) && !t().clusters.has(`outbound|80||${API}`), 10_000, 'api listener and cluster removed');
    expect(t().routes.has(`${API}:80`)).toBe(false);
    expect(t().endpoints.has(`outbound|80||${API}`)).toBe(false);
    await until(() => (subscribed(s)[TYPE_ROUTE]!.subscribed as string[]).length === 1, 5000, 'RDS unsubscribed at the server');
    expect(sorted(subscribed(s)[TYPE_ENDPOINT]!.subscribed)).toEqual(web);
    expect(s.cp.nacks).toEqual([]);

    const c = client(cleanup, s);
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');
    expect(await c.pod('/')).toBe('web-v1');
  }, 30_000);

  it('NACKs a route configuration it cannot serve with the resource and field, keeps the last good routing, and takes the next version', async () => {
    const s = await stand(cleanup, base());
    const c = client(cleanup, s);
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');

    // The control plane publishes a route configuration the waypoint cannot serve (a cluster_header route).
    const name = `${HOST}:80`;
    const bad = encode('envoy.config.route.v3.RouteConfiguration', {
      name,
      virtualHosts: [{ name: 'web', domains: ['*'], routes: [{ name: 'by-header', match: { prefix: '/' }, route: { clusterHeader: 'x-cluster' } }] }],
    });
    s.cp.store.patch(TYPE_ROUTE, new Map([[name, bad]]), []);
    await until(() => s.cp.delta.nacks === 1, 10_000, 'the NACK');
    expect(s.cp.nacks).toEqual([{ typeUrl: TYPE_ROUTE, reason: `RouteConfiguration ${name}: virtual_hosts[0].routes[0] (by-header).route: needs cluster or weighted_clusters (cluster_header and the rest are not supported)` }]);
    expect(s.cp.sotw.nacks).toBe(0);
    expect(subscribed(s)[TYPE_ROUTE]!.rejected).toEqual({ [name]: s.cp.store.get(TYPE_ROUTE).get(name)!.version });
    // The last good routing stays.
    expect(await c.pod('/', { 'x-canary': 'yes' })).toBe('web-v2');
    for (let i = 0; i < 5; i++) expect(await c.pod('/')).toBe('web-v1');

    // The next version (everything to v2) is sent, accepted and routed by; the rejection is cleared.
    const allV2 = istio('VirtualService', 'web', { hosts: ['web'], http: [{ name: 'all', route: [{ destination: { host: 'web', subset: 'v2' } }] }] });
    s.apply([webService(), webPod('v1'), webPod('v2'), subsets(), allV2]);
    await until(() => Object.keys(subscribed(s)[TYPE_ROUTE]!.rejected).length === 0, 10_000, 'the new version ACKed');
    expect(await c.pod('/')).toBe('web-v2');
    expect(s.cp.delta.nacks).toBe(1);
  }, 30_000);

  it('keeps its table while the control plane is away, and is sent only what changed meanwhile', async () => {
    const log = pino({ level: 'silent' });
    const store = new ResourceStore();
    const publish = (objects: KObject[]) => publishEnvoyResources(store, buildEnvoyResources(objects, DEFAULT_MESH));
    const serve = async (port = 0) => {
      const server = new grpc.Server();
      const delta = new DeltaAdsServer(store, log);
      server.addService(adsService().service, { DeltaAggregatedResources: delta.handler(), StreamAggregatedResources: (c: grpc.ServerDuplexStream<unknown, unknown>) => c.end() });
      const bound = await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
      cleanup.add(() => server.forceShutdown());
      return { server, delta, port: bound };
    };
    publish(base());
    const first = await serve();
    const config = new WaypointConfig();
    const xds = config.connect({ address: `127.0.0.1:${first.port}`, nodeId: 'waypoint~restart', log });
    cleanup.add(() => xds.close());
    await xds.whenSynced();
    const endpoints = (cluster: string) => (config.table.endpoints.get(cluster) ?? []).map((e) => e.address).sort();
    await until(() => endpoints(`outbound|80||${HOST}`).length === 2, 10_000, 'both endpoints');
    const before = config.table;

    first.server.forceShutdown();
    await until(() => !xds.connected, 10_000, 'the stream gone');
    expect(config.table).toBe(before); // the last table stays in force
    // Meanwhile web-v2 goes away.
    publish([webService(), webPod('v1'), subsets(), routes()]);
    const updates: XdsUpdate[] = [];
    xds.on('update', (_t: string, u: XdsUpdate) => updates.push(u));
    const second = await serve(first.port);
    await until(() => endpoints(`outbound|80||${HOST}`).length === 1, 40_000, 'the change after the reconnect');
    expect(endpoints(`outbound|80||${HOST}`)).toEqual([POD_IP.v1]);
    expect(endpoints(`outbound|80|v2|${HOST}`)).toEqual([]);
    await until(() => updates.length === 4, 5000, 'a response per type');
    // Only the two assignments that changed: listeners, routes and clusters were held already.
    const sent = updates.flatMap((u) => u.resources.map((r) => r.name)).sort();
    expect(sent).toEqual([`outbound|80||${HOST}`, `outbound|80|v2|${HOST}`].sort());
    expect(updates.flatMap((u) => u.removed)).toEqual([]);
    expect(second.delta.clients()[0]!.types).toEqual({ [TYPE_CLUSTER]: 3, [TYPE_ENDPOINT]: 3, [TYPE_LISTENER]: 1, [TYPE_ROUTE]: 1 });
  }, 60_000);
});
