// Envoy's RBAC engine (envoy.config.rbac.v3.RBAC): an action and named policies, each matching
// when any of its permissions and any of its principals match. Policies are tried in name order
// (Envoy keeps them in a std::map), so the effective policy id is the first matching name. ALLOW
// allows only on a match, DENY denies only on a match, LOG always allows and reports the match.
import type { Msg } from '../../xds/envoy.ts';
import { permission, principal, type Budget, type Facts, type Pred } from './matchers.ts';

export type RbacAction = 'ALLOW' | 'DENY' | 'LOG';

export interface Policy {
  readonly id: string;
  readonly matches: Pred;
}

export interface RbacEngine {
  readonly action: RbacAction;
  /** In name order. */
  readonly policies: readonly Policy[];
}

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function anyOf(preds: Pred[]): Pred {
  if (preds.length === 1) return preds[0]!;
  return (f) => {
    for (const p of preds) if (p(f)) return true;
    return false;
  };
}

function policy(id: string, m: Msg, field: string, budget: Budget): Policy {
  for (const k of Object.keys(m)) {
    if (k === 'condition' || k === 'checkedCondition') throw new Error(`${field}.${snake(k)}: CEL conditions are not supported by the waypoint`);
    if (k !== 'permissions' && k !== 'principals') throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
  const perms = (m.permissions as Msg[] | undefined) ?? [];
  const ids = (m.principals as Msg[] | undefined) ?? [];
  // Envoy's validation requires both (min_items 1); an empty list would otherwise read as "never".
  if (!perms.length) throw new Error(`${field}.permissions: empty`);
  if (!ids.length) throw new Error(`${field}.principals: empty`);
  const p = anyOf(perms.map((x, i) => permission(x, `${field}.permissions[${i}]`, budget)));
  const q = anyOf(ids.map((x, i) => principal(x, `${field}.principals[${i}]`, budget)));
  return { id, matches: (f) => p(f) && q(f) };
}

/** Compiles an RBAC message; `budget` is shared by a filter's rules and shadow rules. */
export function compileRbac(m: Msg, field: string, budget: Budget): RbacEngine {
  for (const k of Object.keys(m)) {
    if (k === 'auditLoggingOptions') throw new Error(`${field}.audit_logging_options: audit loggers are not supported by the waypoint`);
    if (k !== 'action' && k !== 'policies') throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
  const action = (m.action ?? 'ALLOW') as string;
  if (action !== 'ALLOW' && action !== 'DENY' && action !== 'LOG') throw new Error(`${field}.action: ${action} is not ALLOW, DENY or LOG`);
  const map = obj(m.policies) ?? {};
  const names = Object.keys(map).sort(byBytes);
  const policies = names.map((id) => policy(id, obj(map[id]) ?? {}, `${field}.policies[${id}]`, budget));
  return { action, policies };
}

/** std::string order (code units; the same as bytes for the ASCII names Istio writes). */
const byBytes = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The first policy (in name order) that matches, or undefined. */
export function matchedPolicy(e: RbacEngine, f: Facts): string | undefined {
  for (const p of e.policies) if (p.matches(f)) return p.id;
  return undefined;
}

/** Envoy's handleAction: whether the engine allows, and the effective policy id. */
export function allows(e: RbacEngine, id: string | undefined): boolean {
  return e.action === 'DENY' ? id === undefined : e.action === 'ALLOW' ? id !== undefined : true;
}

/**
 * Two engines of one action as one: the union of their policies (a name in both matches when
 * either does). What Istio writes as one filter for all the ALLOW (or DENY) policies of a workload.
 */
export function unionEngines(a: RbacEngine, b: RbacEngine): RbacEngine {
  const byId = new Map(a.policies.map((p) => [p.id, p]));
  for (const p of b.policies) {
    const q = byId.get(p.id);
    byId.set(p.id, q ? { id: p.id, matches: (f) => q.matches(f) || p.matches(f) } : p);
  }
  return { action: a.action, policies: [...byId.values()].sort((x, y) => byBytes(x.id, y.id)) };
}
