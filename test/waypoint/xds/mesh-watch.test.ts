// The waypoint's view of the mesh from the control plane's workload API (Delta ADS, real gRPC):
// services by VIP and port, workloads by address with their SPIFFE ids; a change swaps in a new
// index; an Address that does not decode is NACKed and the last good index stays.
import { afterEach, describe, expect, it } from 'vitest';
import { encodeService, encodeWorkload, TYPE_ADDRESS } from '../../../src/api/codec.ts';
import type { Service } from '../../../src/api/mesh.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';
import type { MeshIndex } from '../../../src/waypoint/mesh.ts';
import { MeshWatch } from '../../../src/waypoint/xds/mesh-watch.ts';
import { Cleanup, log, plane, until, wl } from '../../xds/harness.ts';

const svc: Service = { name: 'web', namespace: 'ns', hostname: 'web.ns.svc.cluster.local', addresses: ['10.96.0.9'], ports: [{ servicePort: 80, targetPort: 8080 }], subjectAltNames: [] };

describe('waypoint mesh watch', () => {
  const cleanup = new Cleanup();
  afterEach(() => cleanup.run());

  it('indexes services and workloads, follows changes, and keeps the last good index on a NACK', async () => {
    const store = new ResourceStore();
    store.replace(TYPE_ADDRESS, new Map([['ns/web.ns.svc.cluster.local', encodeService(svc)], ['a', encodeWorkload(wl('a', '10.0.0.1'))]]));
    const p = await plane(store);
    cleanup.add(() => p.stop());
    const seen: MeshIndex[] = [];
    const w = new MeshWatch((m) => seen.push(m));
    const c = w.connect({ address: `127.0.0.1:${p.port}`, nodeId: 'waypoint-0', log });
    cleanup.add(() => c.close());
    await until(() => seen.length > 0, 'the first index');
    expect(w.index.service('10.96.0.9', 80)).toMatchObject({ listener: 'web.ns.svc.cluster.local:80', port: 80 });
    expect(w.index.service('10.96.0.9', 81)).toBeUndefined();
    expect(w.index.identity('10.0.0.1')).toBe('spiffe://cluster.local/ns/ns/sa/default');

    store.replace(TYPE_ADDRESS, new Map([['ns/web.ns.svc.cluster.local', encodeService(svc)], ['b', encodeWorkload(wl('b', '10.0.0.2'))]]));
    await until(() => w.index.workload('10.0.0.2') !== undefined && w.index.workload('10.0.0.1') === undefined, 'the change');

    store.replace(TYPE_ADDRESS, new Map([['ns/web.ns.svc.cluster.local', encodeService(svc)], ['b', encodeWorkload(wl('b', '10.0.0.2'))], ['bad', new Uint8Array([0xff, 0xff, 0xff])]]));
    await until(() => p.nacks.length > 0, 'the NACK');
    expect(p.nacks[0]!.reason).toMatch(/^Address bad: does not decode/);
    expect(w.index.workload('10.0.0.2')?.name).toBe('b');
  });
});
