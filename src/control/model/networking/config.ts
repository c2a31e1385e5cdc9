// All traffic-management objects -> routing and cluster policy by host. One pass over the objects;
// each object is parsed on its own, so an invalid one is reported and skipped without affecting the
// others.
import type { KObject } from '../../../kube/objects.ts';
import type { NetworkingProblem } from './common.ts';
import { parseDestinationRule, type DestinationPolicy } from './destination-rule.ts';
import { parseGatewayRoute } from './gateway-routes.ts';
import { BACKEND_TRAFFIC_POLICY, ENVOY_GATEWAY_VERSION, parseBackendTrafficPolicy, type LocalRateLimitPolicy, type ParsedTrafficPolicy } from './rate-limit.ts';
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
  /** Local rate limits (BackendTrafficPolicy) by what they target. */
  rateLimits: RateLimitTargets;
  problems: NetworkingProblem[];
}

export interface RateLimitTargets {
  /** "HTTPRoute/ns/name" or "GRPCRoute/ns/name" (a route table's source) -> the policy for its rules. */
  byRoute: Map<string, LocalRateLimitPolicy>;
  /** Service host -> the policy for every route of the host no route policy covers. */
  byHost: Map<string, LocalRateLimitPolicy>;
}

const ISTIO = /^networking\.istio\.io\/(v1|v1beta1|v1alpha3)$/;
const GATEWAY: Record<string, RegExp> = { HTTPRoute: /^gateway\.networking\.k8s\.io\/(v1|v1beta1)$/, GRPCRoute: /^gateway\.networking\.k8s\.io\/(v1|v1alpha2)$/, [BACKEND_TRAFFIC_POLICY]: ENVOY_GATEWAY_VERSION };
export const NETWORKING_KINDS = new Set(['VirtualService', 'DestinationRule', 'ServiceEntry', 'HTTPRoute', 'GRPCRoute', BACKEND_TRAFFIC_POLICY]);

export function parseNetworking(objects: KObject[], o: MeshOptions): NetworkingConfig {
  const out: NetworkingConfig = { routes: new Map(), destinationRules: new Map(), serviceEntries: [], rateLimits: { byRoute: new Map(), byHost: new Map() }, problems: [] };
  const rules: DestinationPolicy[] = [];
  const policies: ParsedTrafficPolicy[] = [];
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
    } else if (obj.kind === BACKEND_TRAFFIC_POLICY) {
      const r = parseBackendTrafficPolicy(obj);
      out.problems.push(...r.problems);
      if (r.parsed) policies.push(r.parsed);
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
  attachRateLimits(policies, out, o);
  return out;
}

/** Each target takes the oldest policy naming it (Envoy Gateway's rule); a later one is reported for that target. */
function attachRateLimits(policies: ParsedTrafficPolicy[], out: NetworkingConfig, o: MeshOptions): void {
  policies.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  for (const { policy, targets } of policies) {
    for (const t of targets) {
      const [map, key] = t.kind === 'Service' ? [out.rateLimits.byHost, `${t.name}.${t.namespace}.svc.${o.clusterDomain}`] : [out.rateLimits.byRoute, `${t.kind}/${t.namespace}/${t.name}`];
      const first = map.get(key);
      if (!first) {
        map.set(key, policy);
        continue;
      }
      const [, ns, name] = policy.source.split('/');
      out.problems.push({ kind: BACKEND_TRAFFIC_POLICY, namespace: ns!, name: name!, field: t.field, reason: `${t.kind} ${t.namespace}/${t.name} already has the rate limit of ${first.source}: not applied to it` });
    }
  }
}
