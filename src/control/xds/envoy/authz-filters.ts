// AuthorizationPolicies attached to a waypoint target -> the Listener's authorization filters, as
// istiod writes them for a waypoint (pilot/pkg/security/authz/builder):
//
// - CUSTOM (authzCustomContributor), per provider in name order: an `envoy.filters.http.rbac` whose
//   shadow_rules hold the provider's CUSTOM rules (ids `istio-ext-authz-<provider>-ns[..]-policy[..]-rule[..]`,
//   shadow_rules_stat_prefix `istio_ext_authz_`), then the provider's `envoy.filters.http.ext_authz`
//   (ext-authz.ts), enabled only when that shadow rule matched. A provider that is unknown or cannot
//   be translated fails closed: an RBAC DENY of what its rules match (istiod's
//   `-deny-due-to-bad-CUSTOM-action` policies), reported.
// - ALLOW, DENY, AUDIT (authzContributor): one RBAC filter per action present, in istiod's order
//   AUDIT (action LOG), DENY, ALLOW; `istio.io/dry-run` policies in shadow_rules.
// - TCP chains (a TCP port, an auto port's default chain, the Gateway's own): the same as
//   `envoy.filters.network.rbac` (stat_prefix `tcp.`), rules built for TCP (an ALLOW rule with an
//   HTTP attribute dropped, a DENY rule matching without it). CUSTOM there: istiod skips an HTTP
//   provider (it cannot see a connection) and uses a network ext_authz for a gRPC one, which weft's
//   waypoint does not have, so a gRPC provider's rules deny the connections they match (fail closed).
import type { KObject } from '../../../kube/objects.ts';
import type { MeshConfig } from '../../model/mesh-config.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import type { PortProtocol } from '../../model/networking/protocol.ts';
import type { Problem } from '../../model/security/authz-common.ts';
import type { Json } from '../../model/security/authz-rbac-matchers.ts';
import { translateWaypointPolicy, type WaypointPolicy } from '../../model/security/authz-waypoint.ts';
import { buildExtAuthz, customPrefix, EXT_AUTHZ_STAT_PREFIX, EXT_AUTHZ_TYPE, HTTP_RBAC_FILTER } from './ext-authz.ts';
import { any } from './messages.ts';

// The parts of listener-extras.ts's AttachContext, EnvoyFilter and ListenerExtras used here
// (declared again so the contributors list can import this file without a circle).
interface AttachContext {
  port?: { protocol: PortProtocol };
  mesh: MeshConfig;
  rootNamespace: string;
  problems: NetworkingProblem[];
}
interface EnvoyFilter {
  name: string;
  typedConfig: unknown;
}
interface Filters {
  httpFilters: EnvoyFilter[];
  networkFilters: EnvoyFilter[];
}
type Contributor = (attached: readonly KObject[], ctx: AttachContext) => Filters;

export const HTTP_RBAC_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const NETWORK_RBAC = 'envoy.filters.network.rbac';
export const NETWORK_RBAC_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';
export const EXT_AUTHZ_FILTER = 'envoy.filters.http.ext_authz';
const BAD_CUSTOM = '-deny-due-to-bad-CUSTOM-action';

const cache = new WeakMap<KObject, { http?: WaypointPolicy; tcp?: WaypointPolicy }>();

/** The policy translated for a chain kind (once per object while it is the same object). */
function translated(obj: KObject, tcp: boolean): WaypointPolicy {
  let c = cache.get(obj);
  if (!c) cache.set(obj, (c = {}));
  const k = tcp ? 'tcp' : 'http';
  return (c[k] ??= translateWaypointPolicy(obj, tcp)!);
}

/** The problems already reported into a namespace's list (a policy serves several listeners). */
const reported = new WeakMap<NetworkingProblem[], Set<string>>();
function report(ctx: AttachContext, p: WaypointPolicy, problems: readonly Problem[]) {
  let seen = reported.get(ctx.problems);
  if (!seen) reported.set(ctx.problems, (seen = new Set()));
  for (const q of problems) {
    const key = `${p.namespace}/${p.name}\0${q.field}\0${q.reason}`;
    if (seen.has(key)) continue;
    seen.add(key);
    ctx.problems.push({ kind: 'AuthorizationPolicy', namespace: p.namespace, name: p.name, field: q.field, reason: q.reason });
  }
}

const TCP_ONLY_REASON = /not seen on a TCP port/;

/** Which chains the listener has: the Gateway's own has both; a port's as its protocol says. */
function chains(ctx: AttachContext): { http: boolean; tcp: boolean } {
  const proto = ctx.port?.protocol;
  if (!proto) return { http: true, tcp: true };
  return { http: proto !== 'tcp', tcp: proto === 'tcp' || proto === 'auto' };
}

/** The attached AuthorizationPolicies, oldest first (istiod's order), translated per chain kind. */
function policies(attached: readonly KObject[], ctx: AttachContext, tcp: boolean): WaypointPolicy[] {
  const aps = attached
    .filter((o) => o.kind === 'AuthorizationPolicy')
    .sort((a, b) => (a.metadata.creationTimestamp ?? '').localeCompare(b.metadata.creationTimestamp ?? '') || a.metadata.name.localeCompare(b.metadata.name));
  return aps.map((o) => {
    const p = translated(o, tcp);
    // HTTP attributes dropped on a TCP chain are worth saying only where the port is declared TCP.
    report(ctx, p, tcp && ctx.port?.protocol !== 'tcp' ? p.problems.filter((q) => !TCP_ONLY_REASON.test(q.reason)) : p.problems);
    return p;
  });
}

const sorted = (entries: [string, Json][]): Json => Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

const httpRbac = (config: Json): EnvoyFilter => ({ name: HTTP_RBAC_FILTER, typedConfig: any(HTTP_RBAC_TYPE, config) });
const networkRbac = (config: Json): EnvoyFilter => ({ name: NETWORK_RBAC, typedConfig: any(NETWORK_RBAC_TYPE, { ...config, statPrefix: 'tcp.' }) });

/** CUSTOM policies by provider name, in name order. */
function byProvider(ps: WaypointPolicy[]): [string, WaypointPolicy[]][] {
  const m = new Map<string, WaypointPolicy[]>();
  for (const p of ps) if (p.action === 'CUSTOM') m.set(p.provider ?? '', [...(m.get(p.provider ?? '') ?? []), p]);
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A provider's rules under their CUSTOM ids. */
const customRules = (provider: string, ps: WaypointPolicy[], suffix = ''): [string, Json][] => ps.flatMap((p) => p.rules.map(([id, r]): [string, Json] => [`${customPrefix(provider)}-${id}${suffix}`, r]));

/** Fails a provider's policies closed: each policy is told why, once. */
function badProvider(ctx: AttachContext, provider: string, ps: WaypointPolicy[], why: string): Json {
  for (const p of ps) report(ctx, p, [{ field: 'spec.provider.name', reason: `${why}: requests (and connections) its rules match are denied` }]);
  return { rules: { action: 'DENY', policies: sorted(customRules(provider, ps, BAD_CUSTOM)) } };
}

export const authzCustomContributor: Contributor = (attached, ctx) => {
  const has = chains(ctx);
  const out: Filters = { httpFilters: [], networkFilters: [] };
  if (has.http)
    for (const [provider, ps] of byProvider(policies(attached, ctx, false))) {
      const p = ctx.mesh.extensionProviders.get(provider);
      const built = !provider ? { errors: ['no provider named'] } : p ? buildExtAuthz(p) : { errors: [`no extension provider ${JSON.stringify(provider)} in the mesh config (ConfigMap ${ctx.rootNamespace}/istio)`] };
      if ('errors' in built) {
        out.httpFilters.push(httpRbac(badProvider(ctx, provider, ps, `provider ${JSON.stringify(provider)} cannot be used (${built.errors.join('; ')})`)));
        continue;
      }
      out.httpFilters.push(
        httpRbac({ shadowRules: { action: 'DENY', policies: sorted(customRules(provider, ps)) }, shadowRulesStatPrefix: EXT_AUTHZ_STAT_PREFIX }),
        { name: EXT_AUTHZ_FILTER, typedConfig: any(EXT_AUTHZ_TYPE, built.config) },
      );
    }
  if (has.tcp)
    for (const [provider, ps] of byProvider(policies(attached, ctx, true))) {
      const p = ctx.mesh.extensionProviders.get(provider);
      const built = p && provider ? buildExtAuthz(p) : undefined;
      // An HTTP authorizer cannot judge a connection: istiod leaves it out of TCP chains.
      if (built && 'config' in built && p!.kind === 'envoyExtAuthzHttp') continue;
      const why = built && 'config' in built ? `provider ${JSON.stringify(provider)} is a gRPC authorizer and weft's waypoint has no network ext_authz for TCP traffic` : `provider ${JSON.stringify(provider)} cannot be used on TCP traffic`;
      out.networkFilters.push(networkRbac(badProvider(ctx, provider, ps, why)));
    }
  return out;
};

const ACTIONS = [
  ['AUDIT', 'LOG'],
  ['DENY', 'DENY'],
  ['ALLOW', 'ALLOW'],
] as const;

/** One action's RBAC config over its policies; undefined when the action has none. */
function actionConfig(ps: WaypointPolicy[], action: 'AUDIT' | 'DENY' | 'ALLOW', envoyAction: string): Json | undefined {
  const mine = ps.filter((p) => p.action === action);
  if (!mine.length) return undefined;
  const enforced = mine.filter((p) => !p.dryRun);
  const dry = mine.filter((p) => p.dryRun);
  const set = (list: WaypointPolicy[]) => ({ action: envoyAction, policies: sorted(list.flatMap((p) => p.rules)) });
  // istiod names the shadow stats by the shadow rules' action; with none, the enum's default (ALLOW).
  const statPrefix = !dry.length || action === 'ALLOW' ? 'istio_dry_run_allow_' : action === 'DENY' ? 'istio_dry_run_deny_' : '';
  return { ...(enforced.length && { rules: set(enforced) }), ...(dry.length && { shadowRules: set(dry) }), ...(statPrefix && { shadowRulesStatPrefix: statPrefix }) };
}

export const authzContributor: Contributor = (attached, ctx) => {
  const has = chains(ctx);
  const out: Filters = { httpFilters: [], networkFilters: [] };
  const http = has.http ? policies(attached, ctx, false) : [];
  const tcp = has.tcp ? policies(attached, ctx, true) : [];
  for (const [action, envoyAction] of ACTIONS) {
    const h = actionConfig(http, action, envoyAction);
    if (h) out.httpFilters.push(httpRbac(h));
    const t = actionConfig(tcp, action, envoyAction);
    if (t) out.networkFilters.push(networkRbac(t));
  }
  return out;
};
