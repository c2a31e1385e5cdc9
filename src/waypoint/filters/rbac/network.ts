// envoy.filters.network.rbac (envoy.extensions.filters.network.rbac.v3.RBAC) at the waypoint: the
// L4 authorization of a TCP port's connections, decided once at CONNECT on the original client's
// identity and address carried by HBONE, before anything is dialled; a refusal is the CONNECT's
// 401 (tcp/relay.ts). The facts of a tunnel do not change after CONNECT, so enforcement_type
// CONTINUOUS decides the same. Shadow rules are evaluated by Envoy for statistics and metadata
// only; nothing reads a connection's metadata here, so they are accepted and have no effect.
import { STAGE, type ConnectionFacts, type ConnectionRefusal, type NetworkFilter } from '../chain.ts';
import type { Msg } from '../../xds/envoy.ts';
import { allows, compileRbac, matchedPolicy, unionEngines, type RbacEngine } from './engine.ts';
import { deniedDetails } from './http.ts';
import type { Budget } from './matchers.ts';

export const RBAC_NETWORK_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';

const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Msg) : undefined);
const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

const ACCEPTED = new Set(['rules', 'shadowRules', 'shadowRulesStatPrefix', 'statPrefix', 'enforcementType']);

class RbacNetworkFilter implements NetworkFilter {
  readonly stage: number;

  constructor(
    readonly name: string,
    readonly engine: RbacEngine,
  ) {
    this.stage = engine.action === 'DENY' ? STAGE.deny : engine.action === 'ALLOW' ? STAGE.allow : STAGE.audit;
  }

  merge(other: NetworkFilter): NetworkFilter | undefined {
    if (!(other instanceof RbacNetworkFilter) || this.engine.action !== other.engine.action) return undefined;
    return new RbacNetworkFilter(this.name, unionEngines(this.engine, other.engine));
  }

  onConnect(c: ConnectionFacts): ConnectionRefusal | undefined {
    const id = matchedPolicy(this.engine, c);
    if (allows(this.engine, id)) return undefined;
    return { reason: deniedDetails(id), ...(id !== undefined && { policy: id }), flags: 'RBAC' };
  }
}

export function compileRbacNetwork(m: Msg, field: string, name = 'envoy.filters.network.rbac'): NetworkFilter | undefined {
  for (const k of Object.keys(m)) {
    if (k === 'matcher' || k === 'shadowMatcher') throw new Error(`${field}.${snake(k)}: matcher trees are not supported by the waypoint`);
    if (!ACCEPTED.has(k)) throw new Error(`${field}.${snake(k)}: not supported by the waypoint`);
  }
  const budget: Budget = { nodes: 0 };
  const rules = obj(m.rules);
  const engine = rules ? compileRbac(rules, `${field}.rules`, budget) : undefined;
  // Checked like the rules, so a shadow policy the waypoint could not evaluate is still refused.
  if (obj(m.shadowRules)) compileRbac(obj(m.shadowRules)!, `${field}.shadow_rules`, budget);
  return engine && new RbacNetworkFilter(name, engine);
}
