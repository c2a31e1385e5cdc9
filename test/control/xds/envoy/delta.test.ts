// Delta ADS for Envoy types (LDS, RDS, CDS, EDS) as Envoy speaks it, seen by a raw gRPC client
// writing DeltaDiscoveryRequests by hand: LDS/CDS wildcards and RDS/EDS by name, a version per
// resource that is the hash of its bytes, only changed resources sent, removed_resources for
// deletions, a NACK counted with its reason and not answered by a resend, a reconnect with
// initial_resource_versions getting only what differs, and a hostile client kept within bounds.
import { createHash, randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { decode, TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { DEFAULT_LIMITS } from '../../../../src/control/xds/subscriptions.ts';
import { Cleanup, controlPlane, host, NS, pod, rawStream, service, until, type AdsResponse, type Echo } from './harness.ts';

const cluster = (svc: string) => `outbound|50051||${svc}.${NS}.svc.cluster.local`;
/** A pod of `app` at 127.0.0.1:port (no server needed: nothing dials it here). */
const at = (app: string, name: string, port: number) => pod(app, { name, port, calls: 0 } satisfies Echo);
const names = (r: AdsResponse | undefined) => (r?.resources ?? []).map((x) => x.name!).sort();
const hash = (b: Buffer) => createHash('sha256').update(b).digest('base64url').slice(0, 16);
const quiet = () => new Promise((r) => setTimeout(r, 300));
const endpointsOf = (r: AdsResponse, name: string) => {
  const cla = decode(TYPE_ENDPOINT, r.resources.find((x) => x.name === name)!.resource!.value) as { endpoints?: { lbEndpoints?: unknown[] }[] };
  return (cla.endpoints ?? []).flatMap((l) => l.lbEndpoints ?? []).length;
};

type Stream = ReturnType<typeof rawStream>;
const ofType = (s: Stream, t: string) => s.got.filter((r) => r.typeUrl === t);
/** ACKs every response from `from` on. */
const ackAll = (s: Stream, from = 0) => {
  for (const r of s.got.slice(from)) s.send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
};

describe('Delta ADS for Envoy types', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  it('serves LDS/CDS as wildcards and RDS/EDS by name, each resource versioned by the hash of its bytes', async () => {
    const cp = await controlPlane(cleanup);
    cp.apply([service('echo'), at('echo', 'a', 7001), service('other')]);
    const s = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    s.send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER }); // no names: the legacy wildcard
    s.send({ typeUrl: TYPE_LISTENER, resourceNamesSubscribe: ['*'] });
    s.send({ typeUrl: TYPE_ROUTE }); // no names of a named type: none, answered empty
    await until(() => s.got.length === 3);
    expect(names(ofType(s, TYPE_CLUSTER)[0])).toEqual([cluster('echo'), cluster('other')]);
    expect(names(ofType(s, TYPE_LISTENER)[0])).toEqual([host('echo'), host('other')]);
    expect(ofType(s, TYPE_ROUTE)[0]).toMatchObject({ resources: [], removedResources: [] });

    s.send({ typeUrl: TYPE_ROUTE, resourceNamesSubscribe: [host('echo'), host('missing')] });
    s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo')] });
    await until(() => s.got.length === 5);
    const rds = ofType(s, TYPE_ROUTE)[1]!;
    expect(names(rds)).toEqual([host('echo')]);
    expect(rds.removedResources).toEqual([host('missing')]); // asked for, does not exist: the client need not wait
    expect(names(ofType(s, TYPE_ENDPOINT)[0])).toEqual([cluster('echo')]);
    expect(endpointsOf(ofType(s, TYPE_ENDPOINT)[0]!, cluster('echo'))).toBe(1);
    for (const r of s.got)
      for (const x of r.resources) {
        expect(x.resource!.type_url).toBe(r.typeUrl);
        expect(x.version).toBe(hash(x.resource!.value));
        expect(x.version).toBe(cp.store.get(r.typeUrl).get(x.name!)!.version);
      }

    ackAll(s);
    await quiet();
    expect(s.got.length).toBe(5); // ACKs are not answered
    const sub = cp.delta.subscriptions()[0]!;
    expect(sub.node).toBe('raw');
    expect(sub.types[TYPE_CLUSTER]).toMatchObject({ subscribed: '*', held: 2, pending: 0, nacks: 0 });
    expect(sub.types[TYPE_ROUTE]!.subscribed).toEqual([host('echo'), host('missing')]);
    expect(sub.types[TYPE_ENDPOINT]).toMatchObject({ subscribed: [cluster('echo')], held: 1 });
  });

  it('sends only the resource that changed, and removed_resources for deletions and unsubscribed names', async () => {
    const cp = await controlPlane(cleanup);
    const both = [service('echo'), at('echo', 'a', 7001), service('other'), at('other', 'o', 7003)];
    cp.apply(both);
    const s = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    s.send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER, resourceNamesSubscribe: ['*'] });
    s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo'), cluster('other')] });
    s.send({ typeUrl: TYPE_LISTENER, resourceNamesSubscribe: ['*'] });
    s.send({ typeUrl: TYPE_ROUTE, resourceNamesSubscribe: [host('echo'), host('other')] });
    await until(() => s.got.length === 4);
    ackAll(s);

    // A second endpoint for echo: one EDS response with echo's assignment alone.
    cp.apply([...both, at('echo', 'b', 7002)]);
    await until(() => s.got.length === 5);
    await quiet();
    expect(s.got.length).toBe(5);
    expect(s.got[4]).toMatchObject({ typeUrl: TYPE_ENDPOINT, removedResources: [] });
    expect(names(s.got[4])).toEqual([cluster('echo')]);
    expect(endpointsOf(s.got[4]!, cluster('echo'))).toBe(2);
    ackAll(s, 4);

    // "other" deleted: each type names it removed and sends nothing else.
    cp.apply([service('echo'), at('echo', 'a', 7001), at('echo', 'b', 7002)]);
    await until(() => s.got.length === 9);
    await quiet();
    expect(s.got.length).toBe(9);
    const removed = Object.fromEntries(s.got.slice(5).map((r) => [r.typeUrl, { resources: r.resources.length, removed: r.removedResources }]));
    expect(removed).toEqual({
      [TYPE_CLUSTER]: { resources: 0, removed: [cluster('other')] },
      [TYPE_ENDPOINT]: { resources: 0, removed: [cluster('other')] },
      [TYPE_LISTENER]: { resources: 0, removed: [host('other')] },
      [TYPE_ROUTE]: { resources: 0, removed: [host('other')] },
    });
    ackAll(s, 5);

    // Unsubscribing echo's endpoints: named removed, and a later change to them is not sent.
    s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesUnsubscribe: [cluster('echo')] });
    await until(() => s.got.length === 10);
    expect(s.got[9]).toMatchObject({ typeUrl: TYPE_ENDPOINT, resources: [], removedResources: [cluster('echo')] });
    ackAll(s, 9);
    cp.apply([service('echo'), at('echo', 'a', 7001)]);
    await quiet();
    expect(s.got.length).toBe(10);
  });

  it('counts a NACK with its reason, does not resend what was refused, and sends the next version', async () => {
    const cp = await controlPlane(cleanup);
    const base = [service('echo'), at('echo', 'a', 7001), service('other'), at('other', 'o', 7003)];
    cp.apply(base);
    const s = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    s.send({ node: { id: 'raw' }, typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo')] });
    await until(() => s.got.length === 1);
    ackAll(s);
    cp.apply([...base, at('echo', 'b', 7002)]);
    await until(() => s.got.length === 2);
    const refused = s.got[1]!;
    s.send({ typeUrl: TYPE_ENDPOINT, responseNonce: refused.nonce, errorDetail: { code: 3, message: `ClusterLoadAssignment ${cluster('echo')}: endpoints[0] is not acceptable` } });
    await until(() => cp.nacks.length === 1);
    expect(cp.nacks[0]).toEqual({ typeUrl: TYPE_ENDPOINT, reason: `ClusterLoadAssignment ${cluster('echo')}: endpoints[0] is not acceptable` });
    expect(cp.delta.nacks).toBe(1);
    const eds = () => cp.delta.subscriptions()[0]!.types[TYPE_ENDPOINT]!;
    expect(eds()).toMatchObject({ rejected: { [cluster('echo')]: refused.resources[0]!.version }, nacks: 1, pending: 0 });
    await quiet();
    expect(s.got.length).toBe(2); // no resend of what was refused

    // A subscription change sends only the new name, not the refused version again.
    s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('other')] });
    await until(() => s.got.length === 3);
    expect(names(s.got[2])).toEqual([cluster('other')]);
    ackAll(s, 2);

    // The resource changes again: the new version is sent, and its ACK clears the rejection.
    cp.apply([...base, at('echo', 'c', 7004)]);
    await until(() => s.got.length === 4);
    expect(names(s.got[3])).toEqual([cluster('echo')]);
    ackAll(s, 3);
    await until(() => Object.keys(eds().rejected).length === 0, 5000, 'the rejection cleared');
    expect(cp.delta.nacks).toBe(1);
  });

  it('a reconnect with initial_resource_versions gets only what differs from what it holds', async () => {
    const cp = await controlPlane(cleanup);
    cp.apply([service('echo'), at('echo', 'a', 7001), service('other'), at('other', 'o', 7003)]);
    const first = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    first.send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER });
    first.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo'), cluster('other')] });
    await until(() => first.got.length === 2);
    const held = (t: string) => Object.fromEntries(ofType(first, t)[0]!.resources.map((x) => [x.name!, x.version!]));
    const clusters = held(TYPE_CLUSTER);
    const endpoints = held(TYPE_ENDPOINT);
    first.close();
    await until(() => cp.delta.connected === 0, 5000, 'the first stream gone');

    // Meanwhile: echo gains an endpoint, other is deleted, third appears.
    cp.apply([service('echo'), at('echo', 'a', 7001), at('echo', 'b', 7002), service('third'), at('third', 't', 7005)]);
    const s = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    s.send({ node: { id: 'raw' }, typeUrl: TYPE_CLUSTER, initialResourceVersions: clusters });
    s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo'), cluster('other')], initialResourceVersions: endpoints });
    await until(() => s.got.length === 2);
    const cds = ofType(s, TYPE_CLUSTER)[0]!;
    expect(names(cds)).toEqual([cluster('third')]); // echo's cluster is unchanged: not resent
    expect(cds.removedResources).toEqual([cluster('other')]);
    const eds = ofType(s, TYPE_ENDPOINT)[0]!;
    expect(names(eds)).toEqual([cluster('echo')]);
    expect(endpointsOf(eds, cluster('echo'))).toBe(2);
    expect(eds.removedResources).toEqual([cluster('other')]);

    // Nothing changed since: a third stream holding it all is answered with an empty response per type.
    const third = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
    const now = (t: string) => Object.fromEntries([...cp.store.get(t).values()].map((r) => [r.name, r.version]));
    third.send({ node: { id: 'raw-3' }, typeUrl: TYPE_CLUSTER, initialResourceVersions: now(TYPE_CLUSTER) });
    third.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo')], initialResourceVersions: { [cluster('echo')]: now(TYPE_ENDPOINT)[cluster('echo')]! } });
    await until(() => third.got.length === 2);
    expect(third.got.map((r) => [r.resources.length, r.removedResources!.length])).toEqual([[0, 0], [0, 0]]);
  });

  describe('a hostile client is bounded', () => {
    it('subscribing to 100k names, or claiming to hold them, ends its stream RESOURCE_EXHAUSTED; SotW alike', async () => {
      const cp = await controlPlane(cleanup);
      cp.apply([service('echo')]);
      const many = Array.from({ length: 100_000 }, (_, i) => `n${i}`);
      const byName = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      byName.send({ node: { id: 'greedy' }, typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: many });
      // Over several requests too: each is under the limit, their sum is not.
      const bySteps = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      bySteps.send({ node: { id: 'greedy-steps' }, typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: many.slice(0, 40_000) });
      bySteps.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: many.slice(40_000, 80_000) });
      const byVersions = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      byVersions.send({ node: { id: 'greedy-held' }, typeUrl: TYPE_CLUSTER, initialResourceVersions: Object.fromEntries(many.map((n) => [n, '1'])) });
      const sotw = rawStream(cleanup, cp.port, 'StreamAggregatedResources');
      sotw.send({ node: { id: 'greedy-sotw' }, typeUrl: TYPE_ENDPOINT, resourceNames: many });
      const types = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      for (let i = 0; i <= DEFAULT_LIMITS.types; i++) types.send({ node: { id: 'many-types' }, typeUrl: `type.googleapis.com/example.T${i}` });
      const all = [byName, bySteps, byVersions, sotw, types];
      await until(() => all.every((s) => s.status.code !== undefined), 10_000, 'every greedy stream ended');
      for (const s of all) expect(s.status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(byName.status.details).toBe(`a stream may subscribe to at most ${DEFAULT_LIMITS.names} names of type ${TYPE_ENDPOINT}; this one asked for 100000`);
      expect(bySteps.status.details).toContain('asked for 80000');
      expect(byVersions.status.details).toContain(`may hold at most ${DEFAULT_LIMITS.names} names of type ${TYPE_CLUSTER}`);
      expect(types.status.details).toBe(`a stream may subscribe to at most ${DEFAULT_LIMITS.types} types`);
      expect(byName.got.length + byVersions.got.length + sotw.got.length).toBe(0);
      expect(types.got.length).toBe(DEFAULT_LIMITS.types); // each type within the limit was answered (empty)
      await until(() => cp.delta.connected === 0 && cp.sotw.connected === 0, 5000, 'the streams forgotten');

      // The server goes on serving others.
      const fine = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      fine.send({ node: { id: 'fine' }, typeUrl: TYPE_CLUSTER });
      await until(() => fine.got.length === 1);
      expect(names(fine.got[0])).toEqual([cluster('echo')]);
    });

    it('garbage and stale nonces are ignored (no NACK counted, no state kept); a client that never answers holds a bounded backlog', async () => {
      const cp = await controlPlane(cleanup);
      const base = [service('echo'), service('other')];
      cp.apply(base);
      const s = rawStream(cleanup, cp.port, 'DeltaAggregatedResources');
      s.send({ node: { id: 'noisy' }, typeUrl: TYPE_CLUSTER });
      await until(() => s.got.length === 1);
      for (let i = 0; i < 2000; i++) s.send({ typeUrl: TYPE_CLUSTER, responseNonce: randomUUID(), errorDetail: { code: 3, message: 'x'.repeat(1000) } });
      // A garbage nonce on a type never subscribed to is that type's first request (a wildcard), nothing more.
      s.send({ typeUrl: TYPE_LISTENER, responseNonce: 'from-another-stream' });
      await until(() => s.got.length === 2);
      // A subscription change riding on a garbage nonce is still applied.
      s.send({ typeUrl: TYPE_ENDPOINT, resourceNamesSubscribe: [cluster('echo')] });
      s.send({ typeUrl: TYPE_ENDPOINT, responseNonce: 'garbage', resourceNamesSubscribe: [cluster('other')] });
      await until(() => s.got.length === 4);
      await quiet();
      expect(s.got.length).toBe(4);
      expect(cp.nacks).toEqual([]);
      expect(cp.delta.nacks).toBe(0);
      const sub = () => cp.delta.subscriptions()[0]!.types;
      expect(sub()[TYPE_ENDPOINT]!.subscribed).toEqual([cluster('echo'), cluster('other')]);
      // The first responses were never answered: they still await an answer; garbage added nothing.
      expect(sub()[TYPE_CLUSTER]!.pending).toBe(1);

      // Never answering while endpoints change 100 times: every change arrives, the backlog stays bounded.
      for (let i = 0; i < 100; i++) cp.apply([...base, at('echo', `p${i}`, 8000 + i)]);
      await until(() => ofType(s, TYPE_ENDPOINT).length === 102, 10_000, 'every change');
      expect(sub()[TYPE_ENDPOINT]!.pending).toBe(DEFAULT_LIMITS.pending);
      // Answering the oldest (no longer awaited) is ignored; the newest is an ACK.
      const eds = ofType(s, TYPE_ENDPOINT);
      s.send({ typeUrl: TYPE_ENDPOINT, responseNonce: eds[0]!.nonce, errorDetail: { code: 3, message: 'late' } });
      s.send({ typeUrl: TYPE_ENDPOINT, responseNonce: eds.at(-1)!.nonce });
      await until(() => sub()[TYPE_ENDPOINT]!.pending === DEFAULT_LIMITS.pending - 1, 5000, 'the ACK');
      expect(cp.delta.nacks).toBe(0);
      // A NACK of one still awaited counts, its 100,000-character reason cut short in logs and events.
      s.send({ typeUrl: TYPE_ENDPOINT, responseNonce: eds.at(-2)!.nonce, errorDetail: { code: 3, message: 'y'.repeat(100_000) } });
      await until(() => cp.delta.nacks === 1, 5000, 'the NACK');
      expect(cp.nacks[0]!.reason).toBe(`${'y'.repeat(2048)}… (100000 characters)`);
      expect(s.status.code).toBeUndefined(); // the stream lives on
    });
  });
});
