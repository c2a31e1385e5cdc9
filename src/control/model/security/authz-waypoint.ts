// An AuthorizationPolicy attached to a waypoint (by targetRefs) -> its action and its rules as Envoy
// RBAC policies keyed `ns[<ns>]-policy[<name>]-rule[<i>]`, as istiod names them. The filters that
// carry them (RBAC per action, CUSTOM's shadow RBAC and ext_authz) are assembled per Listener by
// src/control/xds/envoy/authz-filters.ts.
//
// Fail closed at the policy level (each reported, naming the field):
// - an unknown spec field: ALLOW keeps no rules (it allows nothing), other actions ignore it;
// - `rules` not a list: ALLOW allows nothing, other actions match everything;
// - an unknown action: DENY of everything the policy covers;
// - no `rules`: one policy that never matches (istiod's), so an ALLOW still makes the ALLOW set non-empty.
import type { KObject } from '../../../kube/objects.ts';
import { isObj, readMeta, type Problem } from './authz-common.ts';
import { MATCH_NEVER, type Json } from './authz-rbac-matchers.ts';
import { translateRbacRule, type RbacRuleAction } from './authz-rbac.ts';

export interface WaypointPolicy {
  name: string;
  namespace: string;
  action: RbacRuleAction;
  /** CUSTOM: the extension provider's name ('' when the policy names none). */
  provider?: string;
  /** `istio.io/dry-run`: evaluated as shadow rules, not enforced (ALLOW, DENY, AUDIT). */
  dryRun: boolean;
  /** [policy id, envoy.config.rbac.v3.Policy], in rule order. */
  rules: [string, Json][];
  problems: Problem[];
}

const SPEC_FIELDS = ['selector', 'targetRef', 'targetRefs', 'action', 'rules', 'provider'];
/** Go's strconv.ParseBool true values (what istiod accepts for the dry-run annotation). */
const TRUE = ['1', 't', 'T', 'TRUE', 'true', 'True'];

export const ruleId = (namespace: string, name: string, i: number) => `ns[${namespace}]-policy[${name}]-rule[${i}]`;

/** One policy for one kind of chain; undefined when not a readable AuthorizationPolicy (reported). */
export function translateWaypointPolicy(obj: KObject, forTcp: boolean): WaypointPolicy | undefined {
  const problems: Problem[] = [];
  const read = readMeta(obj, 'AuthorizationPolicy', problems);
  if (!read) return { name: obj.metadata.name, namespace: obj.metadata.namespace ?? '', action: 'DENY', dryRun: false, rules: [[ruleId(obj.metadata.namespace ?? '', obj.metadata.name, 0), MATCH_ALL]], problems: [...problems, { field: 'apiVersion', reason: 'unreadable: enforced as DENY of everything it targets' }] };
  const { meta } = read;
  const spec = read.spec ?? {};
  const id = (i: number) => ruleId(meta.namespace, meta.name, i);
  const out: WaypointPolicy = { name: meta.name, namespace: meta.namespace, action: 'ALLOW', dryRun: false, rules: [], problems };
  if (!isObj(spec)) {
    problems.push({ field: 'spec', reason: 'expected an object: enforced as DENY of everything it targets' });
    return { ...out, action: 'DENY', rules: [[id(0), MATCH_ALL]] };
  }
  let unknownSpec = false;
  for (const k of Object.keys(spec))
    if (!SPEC_FIELDS.includes(k)) {
      problems.push({ field: `spec.${k}`, reason: 'unknown field: an ALLOW policy allows nothing, other actions ignore it' });
      unknownSpec = true;
    }
  if (spec.selector !== undefined) problems.push({ field: 'spec.selector', reason: 'only one of selector or targetRefs may be set: the selector is ignored at the waypoint' });

  const action = spec.action ?? 'ALLOW';
  if (action !== 'ALLOW' && action !== 'DENY' && action !== 'AUDIT' && action !== 'CUSTOM') {
    problems.push({ field: 'spec.action', reason: `unknown action ${JSON.stringify(action)}: enforced as DENY of everything it targets` });
    return { ...out, action: 'DENY', rules: [[id(0), MATCH_ALL]] };
  }
  out.action = action;
  if (action === 'CUSTOM') {
    const p = spec.provider;
    out.provider = isObj(p) && typeof p.name === 'string' ? p.name : '';
    if (!out.provider) problems.push({ field: 'spec.provider.name', reason: 'CUSTOM needs a provider name: requests its rules match are denied' });
    else if (isObj(p)) for (const k of Object.keys(p)) if (k !== 'name') problems.push({ field: `spec.provider.${k}`, reason: 'unknown field: ignored' });
  } else if (spec.provider !== undefined) problems.push({ field: 'spec.provider', reason: 'only used with action CUSTOM: ignored' });

  const dry = meta.annotations['istio.io/dry-run'];
  if (dry !== undefined && TRUE.includes(dry)) {
    if (action === 'CUSTOM') problems.push({ field: 'metadata.annotations.istio.io/dry-run', reason: 'dry run is not supported for CUSTOM by weft: enforced' });
    else out.dryRun = true;
  }

  if (spec.rules === undefined || spec.rules === null) {
    out.rules = [[id(0), MATCH_NEVER]];
    return out;
  }
  if (!Array.isArray(spec.rules)) {
    problems.push({ field: 'spec.rules', reason: 'expected a list: an ALLOW policy allows nothing, other actions match everything' });
    out.rules = action === 'ALLOW' ? [[id(0), MATCH_NEVER]] : [[id(0), MATCH_ALL]];
    return out;
  }
  const ctx = { action: out.action, forTcp, reportTcp: true, namespace: meta.namespace, problems };
  for (const [i, r] of spec.rules.entries()) {
    const policy = translateRbacRule(r, `spec.rules[${i}]`, ctx);
    if (policy) out.rules.push([id(i), policy]);
  }
  if (unknownSpec && action === 'ALLOW') out.rules = [];
  if (!spec.rules.length) out.rules = [[id(0), MATCH_NEVER]];
  return out;
}

/** A policy that matches every request or connection. */
export const MATCH_ALL: Json = { permissions: [{ any: true }], principals: [{ any: true }] };
