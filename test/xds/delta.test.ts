// The generic xDS client in Delta mode against the control plane's Delta ADS server (workload API),
// over real gRPC: first sync, updates and removals, a NACK the server sees, a reconnect that
// resumes from the versions held, and subscriptions by name that change while connected.
import { afterEach, describe, expect, it } from 'vitest';
import { encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/api/codec.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { ResourceStore } from '../../src/control/xds/resources.ts';
import { XdsClient, type XdsUpdate } from '../../src/xds/client.ts';
import { Cleanup, log, plane, table, until, wl } from './harness.ts';

const body = (w: Workload) => encodeWorkload(w);
const addresses = (...ws: Workload[]) => new Map(ws.map((w) => [w.uid, body(w)]));

describe('XdsClient, Delta, against the control plane', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  function client(port: number, t: ReturnType<typeof table>, names?: string[]) {
    const policies: XdsUpdate[] = [];
    const c = new XdsClient({
      address: `127.0.0.1:${port}`,
      nodeId: 'generic-0',
      log,
      watches: [
        { typeUrl: TYPE_ADDRESS, names, apply: (u) => t.apply(u) },
        { typeUrl: TYPE_AUTHORIZATION, apply: (u) => policies.push(u) },
      ],
    });
    cleanup.add(() => c.close());
    return c;
  }

  it('syncs, applies an update and a removal, and ACKs each', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('b', '10.0.0.2')));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const p = await plane(store);
    cleanup.add(() => p.stop());
    const t = table();
    const c = client(p.port, t);
    let synced = 0;
    c.on('synced', () => synced++);
    c.start();
    await c.whenSynced();
    expect(c.synced).toBe(true);
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(c.versions(TYPE_ADDRESS)).toEqual(new Map([...store.get(TYPE_ADDRESS).values()].map((r) => [r.name, r.version])));

    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('c', '10.0.0.3')));
    await until(() => t.held.has(wl('c', '').uid), 'the update');
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.3']);
    const last = t.updates.at(-1)!;
    expect(last.resources.map((r) => r.name)).toEqual([wl('c', '').uid]); // only what changed
    expect(last.removed).toEqual([wl('b', '').uid]);
    expect(c.versions(TYPE_ADDRESS).has(wl('b', '').uid)).toBe(false);
    await until(() => p.acks.length === 3, 'ACKs of both first responses and the update');
    expect(p.nacks).toEqual([]);
    expect(c.nacks).toBe(0);
    expect(synced).toBe(1);
  });

  it('NACKs a resource the caller refuses: the server sees the reason, the caller keeps its state and versions', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1')));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const p = await plane(store);
    cleanup.add(() => p.stop());
    const t = table(new Set(['evil']));
    const c = client(p.port, t);
    c.start();
    await c.whenSynced();
    const versions = new Map(c.versions(TYPE_ADDRESS));

    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.9'), wl('evil', '10.0.0.66')));
    await until(() => p.nacks.length === 1, 'the NACK at the server');
    expect(p.nacks[0]).toEqual({ typeUrl: TYPE_ADDRESS, node: 'generic-0', reason: `${wl('evil', '').uid}: refused by the caller` });
    expect(c.nacks).toBe(1);
    expect(t.ips()).toEqual(['10.0.0.1']); // the whole response was refused, the good change too
    expect(c.versions(TYPE_ADDRESS)).toEqual(versions);

    // The next good state is taken.
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.2')));
    await until(() => t.ips()[0] === '10.0.0.2', 'the next good state');
    expect(t.ips()).toEqual(['10.0.0.2']);
  });

  it('after the server restarts, asks for every type again with the versions held and gets only what changed', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('b', '10.0.0.2'), wl('c', '10.0.0.3')));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const first = await plane(store);
    const t = table();
    const c = client(first.port, t);
    c.start();
    await c.whenSynced();
    first.stop();
    await until(() => !c.connected, 'the stream to end');
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']); // serving on the last state

    // Back on the same port, with b changed and c gone meanwhile.
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('b', '10.0.0.22')));
    const before = t.updates.length;
    const second = await plane(store, first.port);
    cleanup.add(() => second.stop());
    await until(() => t.ips().includes('10.0.0.22'), 'the state from the restarted server', 40_000);
    expect(t.ips()).toEqual(['10.0.0.1', '10.0.0.22']);
    const resumed = t.updates.slice(before);
    expect(resumed).toHaveLength(1);
    expect(resumed[0]!.resources.map((r) => r.name)).toEqual([wl('b', '').uid]); // a was not sent again
    expect(resumed[0]!.removed).toEqual([wl('c', '').uid]);
    await until(() => second.delta.clients().length === 1 && second.delta.clients()[0]!.types[TYPE_AUTHORIZATION] !== undefined, 'both types re-requested');
    expect(second.delta.clients()[0]).toEqual({ node: 'generic-0', types: { [TYPE_ADDRESS]: 2, [TYPE_AUTHORIZATION]: 0 } });
  }, 60_000);

  it('subscribes by name, and changes the names while connected', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('b', '10.0.0.2'), wl('c', '10.0.0.3')));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const p = await plane(store);
    cleanup.add(() => p.stop());
    const t = table();
    const c = client(p.port, t, [wl('a', '').uid, wl('missing', '').uid]);
    c.start();
    await c.whenSynced();
    expect(t.ips()).toEqual(['10.0.0.1']);

    c.subscribe(TYPE_ADDRESS, [wl('b', '').uid, wl('c', '').uid]);
    await until(() => t.held.size === 2 && !t.held.has(wl('a', '').uid), 'the new names');
    expect(t.ips()).toEqual(['10.0.0.2', '10.0.0.3']);
    // A change to a resource not subscribed to is not sent.
    const n = t.updates.length;
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.11'), wl('b', '10.0.0.2'), wl('c', '10.0.0.3')));
    c.subscribe(TYPE_ADDRESS, '*');
    await until(() => t.held.size === 3, 'the wildcard');
    expect(t.ips()).toEqual(['10.0.0.11', '10.0.0.2', '10.0.0.3']);
    expect(t.updates.slice(n).flatMap((u) => u.resources.map((r) => r.name))).toEqual([wl('a', '').uid]);
  });

  it('does not ask for a type subscribed to no names (an empty first request is a wildcard), nor wait for it', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, addresses(wl('a', '10.0.0.1'), wl('b', '10.0.0.2')));
    store.replace(TYPE_AUTHORIZATION, new Map());
    const p = await plane(store);
    cleanup.add(() => p.stop());
    const t = table();
    const c = client(p.port, t, []);
    c.start();
    await c.whenSynced(); // the policies answered; addresses wait for names
    await new Promise((r) => setTimeout(r, 200));
    expect(t.held.size).toBe(0);
    expect(p.delta.clients()[0]!.types).toEqual({ [TYPE_AUTHORIZATION]: 0 });
    c.subscribe(TYPE_ADDRESS, [wl('b', '').uid]);
    await until(() => t.held.size === 1, 'the named workload');
    expect(t.ips()).toEqual(['10.0.0.2']);
  });
});
