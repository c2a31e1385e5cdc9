// What the waypoint knows of the mesh besides its routes: which service a CONNECT authority (a
// service VIP) names, and which workload sits at an address (an endpoint's identity, its labels for
// telemetry; the HBONE peer's workload). From the workload API's Services and Workloads (src/api),
// as an immutable snapshot: the caller builds a new one when they change and swaps it in.
import type { Service, Workload } from '../api/mesh.ts';
import { formatSpiffe } from '../api/spiffe.ts';

export interface ServiceTarget {
  service: Service;
  /** The service port the client dialled. */
  port: number;
  /** The listener (and route configuration) of that port: `hostname:port`. */
  listener: string;
}

export class MeshIndex {
  private readonly services = new Map<string, Service>();
  private readonly workloads = new Map<string, Workload>();

  constructor(services: readonly Service[] = [], workloads: readonly Workload[] = []) {
    for (const s of services) for (const a of s.addresses) this.services.set(a, s);
    for (const w of workloads) for (const a of w.addresses) this.workloads.set(a, w);
  }

  /** The service port a CONNECT to `address:port` is for; undefined when no service has that VIP and port. */
  service(address: string, port: number): ServiceTarget | undefined {
    const service = this.services.get(address);
    if (!service || !service.ports.some((p) => p.servicePort === port)) return undefined;
    return { service, port, listener: `${service.hostname}:${port}` };
  }

  workload(address: string): Workload | undefined {
    return this.workloads.get(address);
  }

  /** The SPIFFE id the workload at `address` must present, or undefined (then nothing is sent there). */
  identity(address: string): string | undefined {
    const w = this.workloads.get(address);
    return w ? formatSpiffe({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount }) : undefined;
  }
}
