// The mesh the waypoint routes in (mesh.ts: services by VIP, workloads by address and identity),
// from the control plane's workload API (istio.workload.Address over Delta ADS, as the node agent
// takes it). Every resource of a response is decoded before any is applied; one that does not
// decode is refused (NACK) and the last good index stays. Each applied change builds a new
// MeshIndex, handed to `onChange` (Waypoint.setMesh).
import type { Logger } from 'pino';
import { decodeAddress, TYPE_ADDRESS } from '../../api/codec.ts';
import type { Service, Workload } from '../../api/mesh.ts';
import { XdsClient, type XdsUpdate, type XdsWatch } from '../../xds/client.ts';
import { MeshIndex } from '../mesh.ts';
import type { WaypointXdsOptions } from './config.ts';

export class MeshWatch {
  private readonly held = new Map<string, { workload: Workload } | { service: Service }>();
  private current = new MeshIndex();

  constructor(private readonly onChange?: (m: MeshIndex) => void) {}

  get index(): MeshIndex {
    return this.current;
  }

  watch(): XdsWatch {
    return { typeUrl: TYPE_ADDRESS, apply: (u) => this.apply(u) };
  }

  /** A Delta client of the workload API feeding this watch; the caller closes it. */
  connect(o: WaypointXdsOptions & { log: Logger }): XdsClient {
    const client = new XdsClient({ ...o, mode: 'delta', watches: [this.watch()] });
    client.start();
    return client;
  }

  private apply(u: XdsUpdate): void {
    const decoded = u.resources.map((r) => {
      try {
        return [r.name, decodeAddress(r.body)] as const;
      } catch (e) {
        throw new Error(`Address ${r.name}: does not decode: ${(e as Error).message}`, { cause: e });
      }
    });
    for (const [n, a] of decoded) this.held.set(n, a);
    for (const n of u.removed) this.held.delete(n);
    const services: Service[] = [];
    const workloads: Workload[] = [];
    for (const a of this.held.values()) {
      if ('service' in a) services.push(a.service);
      else workloads.push(a.workload);
    }
    this.current = new MeshIndex(services, workloads);
    this.onChange?.(this.current);
  }
}
