// security.istio.io AuthorizationPolicy -> the L4 model the agents enforce (istio.security.Authorization).
//
// Fail-closed rules (every one also reported as a problem naming the field):
// - Inside a rule (HTTP attributes, unknown fields, bad values): see authz-rule.ts — an ALLOW rule is
//   dropped, a DENY/AUDIT rule matches on its remaining L4 fields.
// - At spec level (an unknown spec field): ALLOW keeps the policy with zero rules, so it denies
//   everything in its scope; DENY/AUDIT ignore the field (it could only have narrowed them). A
//   selector part we cannot read is ignored, which only widens the set of workloads selected.
// - A policy with targetRef/targetRefs is the waypoint's (src/control/xds/envoy/authz-filters.ts),
//   not the agents': it is translated here with `targeted` set and WORKLOAD_SELECTOR scope without a
//   selector, and the mesh model lists it only on the workloads of a targeted Service or
//   ServiceEntry that no waypoint serves, where the agents enforce it fail closed (its HTTP parts
//   as above: an ALLOW rule with one denies).
// - A malformed `rules` value: ALLOW gets zero rules, DENY/AUDIT one match-all rule.
// - CUSTOM (no external authorizer at L4) becomes DENY over the same rules with HTTP parts ignored:
//   everything the authorizer could have refused is refused. (Istio's ztunnel skips CUSTOM
//   policies entirely, which is fail open.) An unknown action string becomes DENY-all for the scope.
// - The `istio.io/dry-run: "true"` annotation turns ALLOW/DENY into AUDIT: reported, not enforced.
import type { AuthorizationPolicy } from '../../../api/mesh.ts';
import { DEFAULT_ROOT_NAMESPACE, isObj, readMeta, readSelector, type Problem, type TranslateOptions } from './authz-common.ts';
import { translateRule, type ModelRule } from './authz-rule.ts';

export interface AuthorizationTranslation {
  policy?: AuthorizationPolicy;
  /** matchLabels of a WORKLOAD_SELECTOR policy: the control plane lists the policy on matching workloads. */
  selector?: Record<string, string>;
  /** A targetRefs policy: the waypoint's; agents enforce it only for targets no waypoint serves. */
  targeted?: boolean;
  problems: Problem[];
}

const SPEC_FIELDS = ['selector', 'targetRef', 'targetRefs', 'action', 'rules', 'provider'];

export function translateAuthorizationPolicy(obj: unknown, opts: TranslateOptions = {}): AuthorizationTranslation {
  const rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const trustDomain = opts.trustDomain ?? 'cluster.local';
  const problems: Problem[] = [];
  const read = readMeta(obj, 'AuthorizationPolicy', problems);
  if (!read) return { problems };
  const { meta } = read;
  const spec = read.spec === undefined || read.spec === null ? {} : read.spec;
  if (!isObj(spec)) {
    // Nothing readable: deny everything the policy could have covered (its namespace, or the mesh).
    problems.push({ field: 'spec', reason: 'expected an object: enforced as DENY-all for the namespace' });
    return { policy: { ...base(meta, rootNamespace, undefined), action: 'DENY', rules: [{ clauses: [] }] }, problems };
  }

  let specUnenforceable = false;
  for (const k of Object.keys(spec)) {
    if (!SPEC_FIELDS.includes(k)) {
      problems.push({ field: `spec.${k}`, reason: 'unknown field: ALLOW policy denies all in scope, DENY/AUDIT ignore it' });
      specUnenforceable = true;
    }
  }
  const targeted = spec.targetRef !== undefined || spec.targetRefs !== undefined;

  const sel = targeted ? { bad: false } : readSelector(spec.selector, 'spec.selector', problems);
  if (sel.bad) problems.push({ field: 'spec.selector', reason: 'unreadable parts ignored: the policy selects more workloads, not fewer' });
  const selector = sel.labels && Object.keys(sel.labels).length ? sel.labels : undefined;

  const { action, allDeny } = readAction(spec, meta.annotations, problems);
  let rules: ModelRule[];
  if (allDeny) rules = [{ clauses: [] }];
  else if (spec.rules === undefined || spec.rules === null) rules = [];
  else if (!Array.isArray(spec.rules)) {
    problems.push({ field: 'spec.rules', reason: 'expected a list: ALLOW gets no rules, DENY/AUDIT match everything' });
    rules = action === 'ALLOW' ? [] : [{ clauses: [] }];
  } else {
    const ctx = { action, namespace: meta.namespace, trustDomain, problems };
    rules = spec.rules.flatMap((r, i) => translateRule(r, `spec.rules[${i}]`, ctx) ?? []);
  }
  if (specUnenforceable && action === 'ALLOW') rules = [];

  if (targeted) return { policy: { name: meta.name, namespace: meta.namespace, scope: 'WORKLOAD_SELECTOR', action, rules }, targeted, problems };
  const policy: AuthorizationPolicy = { ...base(meta, rootNamespace, selector), action, rules };
  return selector ? { policy, selector, problems } : { policy, problems };
}

function base(meta: { name: string; namespace: string }, rootNamespace: string, selector: Record<string, string> | undefined) {
  // An empty selector selects every workload of the namespace, which is what NAMESPACE scope means.
  const scope: AuthorizationPolicy['scope'] = selector ? 'WORKLOAD_SELECTOR' : meta.namespace === rootNamespace ? 'GLOBAL' : 'NAMESPACE';
  return { name: meta.name, namespace: meta.namespace, scope };
}

function readAction(spec: Record<string, unknown>, annotations: Record<string, string>, problems: Problem[]): { action: AuthorizationPolicy['action']; allDeny: boolean } {
  const a = spec.action ?? 'ALLOW';
  if (spec.provider !== undefined && a !== 'CUSTOM') problems.push({ field: 'spec.provider', reason: 'only used with action CUSTOM: ignored' });
  const dryRun = annotations['istio.io/dry-run'] === 'true';
  switch (a) {
    case 'ALLOW':
    case 'DENY':
      if (dryRun) problems.push({ field: 'metadata.annotations.istio.io/dry-run', reason: 'dry run: translated as AUDIT, reported and not enforced' });
      return { action: dryRun ? 'AUDIT' : (a as 'ALLOW' | 'DENY'), allDeny: false };
    case 'AUDIT':
      return { action: 'AUDIT', allDeny: false };
    case 'CUSTOM':
      problems.push({ field: 'spec.action', reason: 'CUSTOM (external authorizer) not supported at L4: enforced as DENY over its rules, HTTP parts ignored' });
      return { action: 'DENY', allDeny: false };
    default:
      problems.push({ field: 'spec.action', reason: `unknown action ${JSON.stringify(a)}: enforced as DENY-all for the scope` });
      return { action: 'DENY', allDeny: true };
  }
}
