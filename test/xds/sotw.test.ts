// The generic xDS client in State-of-the-World mode against the control plane's SotW ADS server,
// with the Envoy resources it builds for waypoints and proxyless gRPC. The caller behaves as a
// proxy does: LDS and CDS as wildcards, RDS for the route names the listeners give, EDS for the
// clusters' service names. First sync, updates and removals, a NACK the server sees (and then
// routes around), and a reconnect after the server restarts with every type asked for again.
import { afterEach, describe, expect, it } from 'vitest';
import type { KObject } from '../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources, publishEnvoyResources } from '../../src/control/xds/envoy/build.ts';
import { decode, envoyType, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../src/control/xds/envoy/messages.ts';
import { clusterName } from '../../src/control/xds/envoy/names.ts';
import { ResourceStore } from '../../src/control/xds/resources.ts';
import { XdsClient, type XdsUpdate } from '../../src/xds/client.ts';
import { host, pod, service } from '../control/xds/envoy/harness.ts';
import { Cleanup, log, plane, until } from './harness.ts';

type Msg = Record<string, unknown>;
const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const nameOf = (typeUrl: string) => (body: Uint8Array) => {
  const m = decode(typeUrl, body);
  return String(m.name ?? m.clusterName ?? '');
};
const routeNameOf = (listener: Msg) => {
  const any = (listener.apiListener as { apiListener: { value: Uint8Array } }).apiListener;
  const hcm = envoyType(HCM).toObject(envoyType(HCM).decode(any.value)) as { rds: { routeConfigName: string } };
  return hcm.rds.routeConfigName;
};
const echo = (name: string) => ({ name, port: 50051, calls: 0 });
const cluster = (svc: string) => clusterName(host(svc).replace(/:\d+$/, ''), 50051);

/** A proxy's view of its config: one table per type, and the client that fills it. */
function proxy(cleanup: Cleanup, port: number, refuse: (typeUrl: string, name: string) => boolean = () => false) {
  const tables = new Map<string, Map<string, Msg>>([TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE].map((t) => [t, new Map()]));
  const updates: XdsUpdate[] = [];
  const table = (t: string) => tables.get(t)!;
  const apply = (u: XdsUpdate) => {
    const decoded = u.resources.map((r) => {
      if (refuse(u.typeUrl, r.name)) throw new Error(`${r.name}: refused by the proxy`);
      return [r.name, decode(u.typeUrl, r.body)] as const;
    });
    const tb = table(u.typeUrl);
    for (const [n, m] of decoded) tb.set(n, m);
    for (const n of u.removed) tb.delete(n);
    updates.push(u);
    // Follow what listeners and clusters name.
    if (u.typeUrl === TYPE_LISTENER) c.subscribe(TYPE_ROUTE, [...tb.values()].map(routeNameOf));
    if (u.typeUrl === TYPE_CLUSTER) c.subscribe(TYPE_ENDPOINT, [...tb.values()].map((m) => (m.edsClusterConfig as { serviceName: string }).serviceName));
  };
  const watch = (typeUrl: string, names?: string[]) => ({ typeUrl, names, nameOf: nameOf(typeUrl), apply });
  const c: XdsClient = new XdsClient({
    address: `127.0.0.1:${port}`,
    nodeId: 'waypoint-0',
    mode: 'sotw',
    log,
    watches: [watch(TYPE_CLUSTER), watch(TYPE_ENDPOINT, []), watch(TYPE_LISTENER), watch(TYPE_ROUTE, [])],
  });
  cleanup.add(() => c.close());
  const names = (t: string) => [...table(t).keys()].sort();
  return { client: c, table, names, updates };
}

const objects = (...svcs: string[]): KObject[] => svcs.flatMap((s) => [service(s), pod(s, echo(`${s}-0`))]);

describe('XdsClient, SotW, against the control plane', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  async function stood(...svcs: string[]) {
    const store = new ResourceStore();
    publishEnvoyResources(store, buildEnvoyResources(objects(...svcs), DEFAULT_MESH));
    const p = await plane(store);
    cleanup.add(() => p.stop());
    return { store, p, apply: (...s: string[]) => publishEnvoyResources(store, buildEnvoyResources(objects(...s), DEFAULT_MESH)) };
  }

  it('syncs LDS/CDS, follows them with RDS/EDS, and applies an addition and a removal', async () => {
    const { p, apply } = await stood('echo', 'other');
    const x = proxy(cleanup, p.port);
    x.client.start();
    await x.client.whenSynced();
    await until(() => x.names(TYPE_ROUTE).length === 2 && x.names(TYPE_ENDPOINT).length === 2, 'routes and endpoints');
    expect(x.names(TYPE_LISTENER)).toEqual([host('echo'), host('other')]);
    expect(x.names(TYPE_ROUTE)).toEqual([host('echo'), host('other')]);
    expect(x.names(TYPE_CLUSTER)).toEqual([cluster('echo'), cluster('other')]);
    expect(x.names(TYPE_ENDPOINT)).toEqual([cluster('echo'), cluster('other')]);
    expect(JSON.stringify(x.table(TYPE_ENDPOINT).get(cluster('echo')))).toContain('50051');

    apply('echo', 'other', 'late');
    await until(() => x.table(TYPE_ROUTE).has(host('late')) && x.table(TYPE_ENDPOINT).has(cluster('late')), 'the new service');
    expect(x.names(TYPE_LISTENER)).toEqual([host('echo'), host('late'), host('other')]);

    apply('echo', 'late');
    await until(() => !x.table(TYPE_LISTENER).has(host('other')) && !x.table(TYPE_CLUSTER).has(cluster('other')), 'the removal');
    // Listeners and clusters: left out of a full response means removed. Routes and endpoints:
    // dropped by the client when the listener or cluster naming them went.
    await until(() => !x.table(TYPE_ROUTE).has(host('other')) && !x.table(TYPE_ENDPOINT).has(cluster('other')), 'RDS/EDS names dropped');
    expect(x.names(TYPE_ROUTE)).toEqual([host('echo'), host('late')]);
    const seen = p.sotw.clients()[0]!;
    expect(seen.node).toBe('waypoint-0');
    expect(seen.types[TYPE_LISTENER]!.subscribed).toBe('*');
    await until(() => (p.sotw.clients()[0]!.types[TYPE_ROUTE]!.subscribed as string[]).length === 2, 'the server to see the RDS names');
    expect([...(p.sotw.clients()[0]!.types[TYPE_ROUTE]!.subscribed as string[])].sort()).toEqual([host('echo'), host('late')]);
    expect(p.nacks).toEqual([]);
    expect(x.client.nacks).toBe(0);
  });

  it('NACKs a cluster the proxy refuses; the server sees the reason and serves the rest without it', async () => {
    const { p, apply } = await stood('echo');
    const x = proxy(cleanup, p.port, (t, n) => t === TYPE_CLUSTER && n === cluster('bad'));
    x.client.start();
    await x.client.whenSynced();
    await until(() => x.names(TYPE_ENDPOINT).length === 1, 'endpoints');

    apply('echo', 'bad');
    await until(() => p.nacks.length === 1, 'the NACK at the server');
    expect(p.nacks[0]).toEqual({ typeUrl: TYPE_CLUSTER, node: 'waypoint-0', reason: `${cluster('bad')}: refused by the proxy` });
    expect(x.client.nacks).toBe(1);
    expect(x.names(TYPE_CLUSTER)).toEqual([cluster('echo')]);
    const rejected = p.sotw.clients()[0]!.types[TYPE_CLUSTER]!;
    expect(Object.keys(rejected.rejected)).toEqual([cluster('bad')]);
    expect(rejected.version).not.toBe(''); // the version the NACK kept is the one accepted before

    // The next change: the server leaves the refused version out, and the proxy takes the rest.
    apply('echo', 'bad', 'late');
    await until(() => x.table(TYPE_CLUSTER).has(cluster('late')), 'the next clusters');
    expect(x.names(TYPE_CLUSTER)).toEqual([cluster('echo'), cluster('late')]);
    expect(x.client.nacks).toBe(1);
  });

  it('after the server restarts, asks for every type again, with the names it follows, and converges', async () => {
    const { store, p } = await stood('echo', 'other');
    const x = proxy(cleanup, p.port);
    x.client.start();
    await x.client.whenSynced();
    await until(() => x.names(TYPE_ROUTE).length === 2 && x.names(TYPE_ENDPOINT).length === 2, 'routes and endpoints');
    p.stop();
    await until(() => !x.client.connected, 'the stream to end');
    expect(x.names(TYPE_LISTENER)).toEqual([host('echo'), host('other')]); // serving on the last state

    publishEnvoyResources(store, buildEnvoyResources(objects('echo', 'late'), DEFAULT_MESH));
    const second = await plane(store, p.port);
    cleanup.add(() => second.stop());
    await until(() => x.names(TYPE_LISTENER).join() === [host('echo'), host('late')].join() && x.table(TYPE_ROUTE).has(host('late')), 'the restarted server', 40_000);
    await until(() => x.names(TYPE_ROUTE).length === 2 && x.names(TYPE_ENDPOINT).length === 2, 'RDS/EDS converged');
    expect(x.names(TYPE_ROUTE)).toEqual([host('echo'), host('late')]);
    expect(x.names(TYPE_ENDPOINT)).toEqual([cluster('echo'), cluster('late')]);
    const seen = second.sotw.clients()[0]!.types;
    expect(Object.keys(seen).sort()).toEqual([TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE].sort());
    await until(() => (second.sotw.clients()[0]!.types[TYPE_ENDPOINT]!.subscribed as string[]).length === 2, 'EDS names at the new server');
    expect([...(second.sotw.clients()[0]!.types[TYPE_ENDPOINT]!.subscribed as string[])].sort()).toEqual([cluster('echo'), cluster('late')]);
  }, 60_000);
});
