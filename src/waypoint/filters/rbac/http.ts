// envoy.filters.http.rbac (envoy.extensions.filters.http.rbac.v3.RBAC) at the waypoint. A denial
// is Envoy's: 403, body `RBAC: access denied`, response flag RBAC, details
// rbac_access_denied_matched_policy[<id>] (`[none]` when an ALLOW matched nothing). LOG never
// denies: a match sets Envoy's access_log_hint (namespace envoy.common). Shadow rules never deny:
// they set `<prefix>shadow_effective_policy_id` and `<prefix>shadow_engine_result` in namespace
// envoy.filters.http.rbac (how Istio's CUSTOM action enables ext_authz). Filters of one action
// without shadow rules merge (chain.ts mergeFilters) into one whose policies are the union.
import { STAGE, type FilterReply, type FilterRequest, type HttpFilter } from '../chain.ts';
import type { Msg } from '../../xds/envoy.ts';
import { allows, compileRbac, matchedPolicy, unionEngines, type RbacEngine } from './engine.ts';
import type { Budget } from './matchers.ts';

export const RBAC_HTTP_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const RBAC_METADATA = 'envoy.filters.http.rbac';
export const COMMON_METADATA = 'envoy.common';
export const DENIED_BODY = 'RBAC: access denied';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Fields that only name statistics: accepted, nothing to enforce. */
const STATS_ONLY = new Set(['rulesStatPrefix', 'trackPerRuleStats']);

export const deniedDetails = (id: string | undefined) => `rbac_access_denied_matched_policy[${id ?? 'none'}]`;

/**
 * The Istio policies of an engine (`ns[x]-policy[y]`, each named once however many rules it has),
 * so an ALLOW denial's log line says which policies the request failed to match.
 */
function policyNames(e: RbacEngine): string {
  const names = new Set(e.policies.map((p) => /^(.*)-rule\[\d+\]$/.exec(p.id)?.[1] ?? p.id));
  return [...names].join(',');
}

const stageOf = (e: RbacEngine | undefined): number =>
  !e ? STAGE.customMatch : e.action === 'DENY' ? STAGE.deny : e.action === 'ALLOW' ? STAGE.allow : STAGE.audit;

interface Shadow {
  engine: RbacEngine;
  idKey: string;
  resultKey: string;
}

class RbacHttpFilter implements HttpFilter {
  readonly stage: number;

  constructor(
    readonly name: string,
    readonly engine: RbacEngine | undefined,
    readonly shadow: Shadow | undefined,
  ) {
    this.stage = stageOf(engine);
  }

  merge(other: HttpFilter): HttpFilter | undefined {
    if (!(other instanceof RbacHttpFilter) || this.shadow || other.shadow || !this.engine || !other.engine) return undefined;
    if (this.engine.action !== other.engine.action) return undefined;
    return new RbacHttpFilter(this.name, unionEngines(this.engine, other.engine), undefined);
  }

  decode(r: FilterRequest): FilterReply | undefined {
    if (this.shadow) {
      const s = this.shadow;
      const id = matchedPolicy(s.engine, r);
      const md = r.metadata.get(RBAC_METADATA) ?? {};
      if (id !== undefined) md[s.idKey] = id;
      md[s.resultKey] = allows(s.engine, id) ? 'allowed' : 'denied';
      r.metadata.set(RBAC_METADATA, md);
    }
    const e = this.engine;
    if (!e) return undefined;
    const id = matchedPolicy(e, r);
    if (e.action === 'LOG') {
      if (id !== undefined) r.metadata.set(COMMON_METADATA, { ...r.metadata.get(COMMON_METADATA), access_log_hint: true });
      return undefined;
    }
    if (allows(e, id)) return undefined;
    return { status: 403, body: DENIED_BODY, flags: 'RBAC', details: deniedDetails(id), policy: id ?? policyNames(e) };
  }
}

/** The filter, or nothing when it has neither rules nor shadow rules (Envoy enforces nothing then). */
export function compileRbacHttp(m: Msg, field: string, name = 'envoy.filters.http.rbac'): HttpFilter | undefined {
  for (const k of Object.keys(m)) {
    if (k === 'matcher' || k === 'shadowMatcher') throw new Error(`${field}.${snake(k)}: matcher trees are not supported by the waypoint`);
    if (k !== 'rules' && k !== 'shadowRules' && k !== 'shadowRulesStatPrefix' && !STATS_ONLY.has(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
  const budget: Budget = { nodes: 0 };
  const rules = obj(m.rules);
  const engine = rules ? compileRbac(rules, `${field}.rules`, budget) : undefined;
  const shadowRules = obj(m.shadowRules);
  const prefix = typeof m.shadowRulesStatPrefix === 'string' ? m.shadowRulesStatPrefix : '';
  const shadow = shadowRules
    ? { engine: compileRbac(shadowRules, `${field}.shadow_rules`, budget), idKey: `${prefix}shadow_effective_policy_id`, resultKey: `${prefix}shadow_engine_result` }
    : undefined;
  if (!engine && !shadow) return undefined;
  return new RbacHttpFilter(name, engine, shadow);
}
