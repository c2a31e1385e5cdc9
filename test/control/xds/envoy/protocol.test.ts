// xDS protocol behaviour of the SotW and Delta servers for Envoy types, seen by a raw ADS client.
import { afterEach, describe, expect, it } from 'vitest';
import { decode, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { Cleanup, controlPlane, echoServer, host, pod, rawStream, service, until } from './harness.ts';

const quiet = () => new Promise((r) => setTimeout(r, 300));

describe('Envoy xDS protocol', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  it('SotW: full sets for LDS/CDS, requested names for RDS/EDS, no resend on ACK, late resources sent', async () => {
    const cp = await controlPlane(cleanup);
    const a = await echoServer(cleanup, 'a');
    cp.apply([service('echo'), pod('echo', a), service('other')]);
    const { send, got } = rawStream(cleanup, cp.port, 'StreamAggregatedResources');
    const node = { id: 'raw' };
    send({ node, typeUrl: TYPE_LISTENER, resourceNames: [] });
    await until(() => got.length === 1);
    expect(got[0]!.resources.map((r) => decode(TYPE_LISTENER, r.value!).name).sort()).toEqual([host('echo'), host('other')]);
    expect(got[0]!.resources.every((r) => r.type_url === TYPE_LISTENER)).toBe(true);
    // ACK: same version and nonce, same subscription -> nothing more.
    send({ node, typeUrl: TYPE_LISTENER, versionInfo: got[0]!.versionInfo, responseNonce: got[0]!.nonce, resourceNames: [] });
    send({ node, typeUrl: TYPE_ROUTE, resourceNames: [host('echo'), host('late')] });
    await until(() => got.length === 2);
    expect(got[1]!.resources.map((r) => decode(TYPE_ROUTE, r.value!).name)).toEqual([host('echo')]);
    send({ node, typeUrl: TYPE_ROUTE, versionInfo: got[1]!.versionInfo, responseNonce: got[1]!.nonce, resourceNames: [host('echo'), host('late')] });
    await quiet();
    expect(got.length).toBe(2);
    // A requested route that appears later is sent alone; LDS is resent whole.
    cp.apply([service('echo'), pod('echo', a), service('other'), service('late')]);
    await until(() => got.length === 4);
    const byType = Object.fromEntries(got.slice(2).map((r) => [r.typeUrl, r]));
    expect(byType[TYPE_ROUTE]!.resources.map((r) => decode(TYPE_ROUTE, r.value!).name)).toEqual([host('late')]);
    expect(byType[TYPE_LISTENER]!.resources).toHaveLength(3);
    // A NACK is counted and does not trigger a resend.
    const rds = byType[TYPE_ROUTE]!;
    send({ node, typeUrl: TYPE_ROUTE, versionInfo: got[1]!.versionInfo, responseNonce: rds.nonce, resourceNames: [host('echo'), host('late')], errorDetail: { code: 3, message: 'nope' } });
    await until(() => cp.nacks.length === 1);
    await quiet();
    expect(got.length).toBe(4);
    expect(cp.sotw.clients()[0]!.types[TYPE_ROUTE]!.rejected).toEqual({ [host('late')]: cp.store.get(TYPE_ROUTE).get(host('late'))!.version });
  });

  it('SotW: a stale nonce is ignored', async () => {
    const cp = await controlPlane(cleanup);
    cp.apply([service('echo')]);
    const { send, got } = rawStream(cleanup, cp.port, 'StreamAggregatedResources');
    send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER, resourceNames: [] });
    await until(() => got.length === 1);
    send({ typeUrl: TYPE_CLUSTER, responseNonce: 'not-the-latest', resourceNames: ['outbound|50051||x'], errorDetail: { code: 3, message: 'stale' } });
    await quiet();
    expect(got.length).toBe(1);
    expect(cp.nacks).toEqual([]);
  });

  it('Delta: serves Envoy types with proper Any type URLs, then only changes and removals', async () => {
    const cp = await controlPlane(cleanup);
    const a = await echoServer(cleanup, 'a');
    cp.apply([service('echo'), pod('echo', a)]);
    const { send, got } = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER, resourceNamesSubscribe: [] });
    send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: ['outbound|50051||echo.conf.svc.cluster.local'] });
    await until(() => got.length === 2);
    const cds = got.find((r) => r.typeUrl === TYPE_CLUSTER)!;
    expect(cds.resources.map((r) => r.name)).toEqual(['outbound|50051||echo.conf.svc.cluster.local']);
    expect(cds.resources[0]!.resource!.type_url).toBe(TYPE_CLUSTER);
    const eds = got.find((r) => r.typeUrl === TYPE_ENDPOINT)!;
    const cla = decode(TYPE_ENDPOINT, eds.resources[0]!.resource!.value) as { endpoints: { lbEndpoints: { endpoint: { address: { socketAddress: { address: string; portValue: number } } } }[] }[] };
    expect(cla.endpoints[0]!.lbEndpoints[0]!.endpoint.address.socketAddress).toMatchObject({ address: '127.0.0.1', portValue: a.port });
    for (const r of got) send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
    cp.apply([service('echo')]);
    await until(() => got.length === 3);
    expect(got[2]!.typeUrl).toBe(TYPE_ENDPOINT); // the cluster is unchanged; its endpoints are gone
    expect((decode(TYPE_ENDPOINT, got[2]!.resources[0]!.resource!.value) as { endpoints?: unknown[] }).endpoints ?? []).toEqual([]);
    cp.apply([]);
    await until(() => got.length === 5);
    expect(got.slice(3).flatMap((r) => r.removedResources).sort()).toEqual(['outbound|50051||echo.conf.svc.cluster.local', 'outbound|50051||echo.conf.svc.cluster.local']);
  });
});
