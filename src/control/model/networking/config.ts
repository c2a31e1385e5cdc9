// All traffic-management objects -> routing and cluster policy by host. One pass over the objects;
// each object is parsed on its own, so an invalid one is reported and skipped without affecting the
// others.
import type { KObject } from '../../../kube/objects.ts';
import type { NetworkingProblem } from './common.ts';
import { parseDestinationRule, type DestinationPolicy } from './destination-rule.ts';
import { parseGatewayRoute } from './gateway-routes.ts';
import type { RouteTable } from './routes.ts';
import { parseServiceEntry, type ServiceEntryModel } from './service-entry.ts';
import { parseVirtualService } from './virtual-service.ts';
import type { MeshOptions } from './workloads.ts';

export interface NetworkingConfig {
  /** host -> tables attached to it, oldest first. */
  routes: Map<string, RouteTable[]>;
  /** host -> the oldest valid DestinationRule for it (Istio's choice when several exist). */
  destinationRules: Map<string, DestinationPolicy>;
  serviceEntries: ServiceEntryModel[];
  problems: NetworkingProblem[];
}

const ISTIO = /^networking\.istio\.io\/(v1|v1beta1|v1alpha3)$/;
const GATEWAY: Record<string, RegExp> = { HTTPRoute: /^gateway\.networking\.k8s\.io\/(v1|v1beta1)$/, GRPCRoute: /^gateway\.networking\.k8s\.io\/(v1|v1alpha2)$/ };
export const NETWORKING_KINDS = new Set(['VirtualService', 'DestinationRule', 'ServiceEntry', 'HTTPRoute', 'GRPCRoute']);

export function parseNetworking(objects: KObject[], o: MeshOptions): NetworkingConfig {
  const out: NetworkingConfig = { routes: new Map(), destinationRules: new Map(), serviceEntries: [], problems: [] };
  const rules: DestinationPolicy[] = [];
  for (const obj of objects) {
    if (!NETWORKING_KINDS.has(obj.kind)) continue;
    const want = GATEWAY[obj.kind] ?? ISTIO;
    if (!want.test(obj.apiVersion)) {
      out.problems.push({ kind: obj.kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name, field: 'apiVersion', reason: `unsupported version ${obj.apiVersion}` });
      continue;
    }
    if (obj.kind === 'VirtualService' || obj.kind === 'HTTPRoute' || obj.kind === 'GRPCRoute') {
      const r = obj.kind === 'VirtualService' ? parseVirtualService(obj, o) : parseGatewayRoute(obj, o);
      out.problems.push(...r.problems);
      for (const t of r.tables) {
        const list = out.routes.get(t.host);
        if (list) list.push(t);
        else out.routes.set(t.host, [t]);
      }
    } else if (obj.kind === 'DestinationRule') {
      const r = parseDestinationRule(obj, o);
      out.problems.push(...r.problems);
      if (r.rule) rules.push(r.rule);
    } else {
      const r = parseServiceEntry(obj, o);
      out.problems.push(...r.problems);
      if (r.entry) out.serviceEntries.push(r.entry);
    }
  }
  for (const list of out.routes.values()) list.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  rules.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  for (const r of rules) {
    const first = out.destinationRules.get(r.host);
    if (!first) out.destinationRules.set(r.host, r);
    else {
      const [, ns, name] = r.source.split('/');
      out.problems.push({ kind: 'DestinationRule', namespace: ns!, name: name!, field: 'spec.host', reason: `${r.host} already has ${first.source}: this rule is ignored` });
    }
  }
  return out;
}
