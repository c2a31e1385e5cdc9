// The lab's Services: a ClusterIP for each (the one asked for when it is free in 10.96.0.0/16, else
// the next free one; its IPv6 twin beside it), and endpoints from the running pods the selector
// matches, which kube-proxy (./kubeproxy.ts) and the hosts files (./dns.ts) are made from.
import { keyOf, matchesSelector, type Service } from '../kube/objects.ts';
import type { NamedService } from './dns.ts';
import type { PodRecord } from './kubelet.ts';
import type { ServiceEndpoints } from './kubeproxy.ts';
import { serviceIP6 } from './layout.ts';
import type { ObjectStore } from './store.ts';

export interface Endpoint {
  ip: string;
  ip6: string;
  port: number;
  pod: string;
  node: string;
  ready: boolean;
}

export class Services {
  private clusterIPs = new Map<string, string>();

  constructor(
    private readonly store: ObjectStore,
    private readonly pods: ReadonlyMap<string, PodRecord>,
  ) {}

  all(): Service[] {
    return this.store.ofKind<Service>('Service');
  }

  /** The service's ClusterIP, allocated on first use; undefined for a headless service. */
  clusterIPOf(s: Service): string | undefined {
    const key = keyOf(s);
    let ip = this.clusterIPs.get(key);
    if (ip || s.spec.clusterIP === 'None') return ip;
    const used = new Set(this.clusterIPs.values());
    const asked = s.spec.clusterIP;
    if (asked && /^10\.96\.\d+\.\d+$/.test(asked) && !used.has(asked)) ip = asked;
    for (let n = 10; !ip && n < 65534; n++) {
      const cand = `10.96.${n >> 8}.${n & 255}`;
      if (!used.has(cand)) ip = cand;
    }
    this.clusterIPs.set(key, ip!);
    return ip;
  }

  /** Services with a ClusterIP, as hosts files list them. */
  named(): NamedService[] {
    return this.all().flatMap((s) => {
      const ip = this.clusterIPOf(s);
      return ip ? [{ name: s.metadata.name, namespace: s.metadata.namespace!, clusterIP: ip }] : [];
    });
  }

  /** Endpoints of a service port: the address and resolved targetPort of each running pod it selects. */
  endpointsOf(s: Service, port: Service['spec']['ports'][number]): Endpoint[] {
    if (!s.spec.selector) return [];
    const out = [];
    for (const r of this.pods.values()) {
      if (r.pod.metadata.namespace !== s.metadata.namespace || !matchesSelector(r.pod.metadata.labels, s.spec.selector) || !r.runtime) continue;
      const tp = port.targetPort ?? port.port;
      const target = typeof tp === 'number' ? tp : r.pod.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.name === tp)?.containerPort;
      if (target === undefined) continue;
      out.push({ ip: r.ip, ip6: r.ip6, port: target, pod: r.pod.metadata.name, node: r.node.name, ready: r.runtime.phase === 'Running' && r.runtime.ready });
    }
    return out.sort((a, b) => a.ip.localeCompare(b.ip, undefined, { numeric: true }));
  }

  /** Every ClusterIP:port (both families) with its ready endpoints, for kube-proxy. */
  readyEndpoints(): ServiceEndpoints[] {
    const svcEps: ServiceEndpoints[] = [];
    for (const s of this.all()) {
      const ip = this.clusterIPOf(s);
      if (!ip) continue;
      for (const p of s.spec.ports) {
        const ready = this.endpointsOf(s, p).filter((e) => e.ready);
        svcEps.push({ clusterIP: ip, port: p.port, endpoints: ready });
        svcEps.push({ clusterIP: serviceIP6(ip), port: p.port, endpoints: ready.map((e) => ({ ip: e.ip6, port: e.port })) });
      }
    }
    return svcEps;
  }
}
