// The control plane's real ADS servers (Delta and SotW over one ResourceStore) on 127.0.0.1, for the
// generic xDS client's tests; a server can stop and come back on the same port.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { decodeAddress } from '../../src/api/codec.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { adsService } from '../../src/api/protos.ts';
import { DeltaAdsServer } from '../../src/control/xds/delta-ads.ts';
import { SotwAdsServer } from '../../src/control/xds/envoy/sotw-ads.ts';
import type { ResourceStore } from '../../src/control/xds/resources.ts';
import type { XdsUpdate } from '../../src/xds/client.ts';

export const log = pino({ level: 'silent' });

export interface Plane {
  port: number;
  delta: DeltaAdsServer;
  sotw: SotwAdsServer;
  /** Every ACK and NACK the servers saw, in order. */
  acks: string[];
  nacks: { typeUrl: string; node: string; reason: string }[];
  stop(): void;
}

/** Both ADS servers over `store`, on `port` (0: any). */
export async function plane(store: ResourceStore, port = 0): Promise<Plane> {
  const acks: string[] = [];
  const nacks: Plane['nacks'] = [];
  const events = { onAck: (typeUrl: string) => acks.push(typeUrl), onNack: (typeUrl: string, node: string, reason: string) => nacks.push({ typeUrl, node, reason }) };
  const delta = new DeltaAdsServer(store, log, events);
  const sotw = new SotwAdsServer(store, log, events);
  const server = new grpc.Server();
  server.addService(adsService().service, { DeltaAggregatedResources: delta.handler(), StreamAggregatedResources: sotw.handler() });
  const bound = await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port: bound, delta, sotw, acks, nacks, stop: () => server.forceShutdown() };
}

export const until = async (f: () => boolean, what: string, ms = 10_000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

export const wl = (name: string, ip: string, status: Workload['status'] = 'HEALTHY'): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: [ip], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-0', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: {}, authorizationPolicies: [], status, clusterId: 'Kubernetes',
});

/** Runs cleanups registered during a test, last first. */
export class Cleanup {
  private readonly fns: (() => void)[] = [];
  add(f: () => void) {
    this.fns.push(f);
  }
  run() {
    for (const f of this.fns.splice(0).reverse()) f();
  }
}

/** A caller's table of workloads: decodes every resource first, then applies; refuses names in `reject`. */
export function table(reject = new Set<string>()) {
  const held = new Map<string, Workload>();
  const updates: XdsUpdate[] = [];
  return {
    held,
    updates,
    ips: () => [...held.values()].map((w) => w.addresses[0]).sort(),
    apply(u: XdsUpdate) {
      const decoded = u.resources.map((r) => {
        const a = decodeAddress(r.body);
        if (!('workload' in a)) throw new Error(`${r.name}: not a workload`);
        if (reject.has(a.workload.name)) throw new Error(`${r.name}: refused by the caller`);
        return [r.name, a.workload] as const;
      });
      for (const [n, w] of decoded) held.set(n, w);
      for (const n of u.removed) held.delete(n);
      updates.push(u);
    },
  };
}

