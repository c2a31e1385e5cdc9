// One AuthorizationPolicy rule -> one model rule (clauses AND-ed, matches OR-ed): the `from` list
// becomes one clause, the `to` list one clause, each `when` condition one clause.
//
// Fail closed: anything the agent cannot enforce at L4 (HTTP attributes, unknown fields, values
// that do not parse) is an "unenforceable constraint". An ALLOW rule holding one is dropped (it
// can never match); a DENY or AUDIT rule keeps matching on everything else, i.e. the constraint is
// removed, which can only widen what it matches. Fields are AND-ed, so removing one never narrows.
import type { Match, StringMatch } from '../../../api/mesh.ts';
import { isObj, toIpBlock, toPort, toPrincipalMatch, toStringMatch, type Obj, type Problem } from './authz-common.ts';

export interface RuleContext {
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  /** The policy's namespace: the default namespace of `serviceAccounts` entries. */
  namespace: string;
  trustDomain: string;
  problems: Problem[];
}

export type ModelRule = { clauses: { matches: Match[] }[] };

const SOURCE_L4 = ['principals', 'notPrincipals', 'namespaces', 'notNamespaces', 'serviceAccounts', 'notServiceAccounts', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks'];
const SOURCE_L7 = ['requestPrincipals', 'notRequestPrincipals'];
const OPERATION_L7 = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'];
/** Condition keys an L4 agent can see. remote.ip is the peer address here: no XFF or PROXY header at L4. */
const WHEN_L4 = ['source.ip', 'remote.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port'];
const isWhenL7 = (k: string) => k.startsWith('request.') || k === 'connection.sni' || k.startsWith('experimental.');

/** Collects an unenforceable constraint with the consequence spelled out for this action. */
class Collector {
  unenforceable = false;
  constructor(readonly ctx: RuleContext) {}
  /** Records the problem; returns undefined so callers can `return c.flag(...)`. */
  flag(field: string, why: string): undefined {
    this.unenforceable = true;
    const then = this.ctx.action === 'ALLOW' ? 'ALLOW rule dropped, it never matches' : `ignored, the ${this.ctx.action} rule matches on its other fields`;
    this.ctx.problems.push({ field, reason: `${why}: ${then}` });
    return undefined;
  }
  /** Flags and yields the unconstrained match. */
  none(field: string, why: string): Match {
    this.flag(field, why);
    return {};
  }
}

const L7 = 'HTTP attribute, not enforced at L4 (no waypoint)';

/** Translates a list of strings with `conv`; flags the whole field when any entry is invalid. */
function convList<T>(c: Collector, v: unknown, path: string, conv: (s: string) => T | undefined): T[] | undefined {
  if (!Array.isArray(v)) return c.flag(path, 'expected a list of strings');
  const out: T[] = [];
  for (const [i, s] of v.entries()) {
    const t = typeof s === 'string' ? conv(s) : undefined;
    if (t === undefined) return c.flag(`${path}[${i}]`, `invalid value ${JSON.stringify(s)}`);
    out.push(t);
  }
  return out.length ? out : undefined;
}

function serviceAccountPrincipal(c: Collector, s: string): StringMatch | undefined {
  const parts = s.split('/');
  if (s.includes('*') || parts.length > 2 || parts.some((p) => !p)) return undefined;
  const [ns, sa] = parts.length === 2 ? parts : [c.ctx.namespace, parts[0]];
  return { exact: `${c.ctx.trustDomain}/ns/${ns}/sa/${sa}` };
}

function sourceMatch(c: Collector, src: unknown, path: string): Match {
  if (src === undefined || src === null) return {};
  if (!isObj(src)) return c.none(path, 'expected an object');
  for (const k of Object.keys(src)) {
    if (SOURCE_L7.includes(k)) c.flag(`${path}.${k}`, L7);
    else if (!SOURCE_L4.includes(k)) c.flag(`${path}.${k}`, 'unknown field');
  }
  const m: Match = {};
  const str = (k: string, conv: (s: string) => StringMatch) => (src[k] === undefined ? undefined : convList(c, src[k], `${path}.${k}`, conv));
  const ips = (k: string) => (src[k] === undefined ? undefined : convList(c, src[k], `${path}.${k}`, toIpBlock));
  m.principals = str('principals', toPrincipalMatch);
  m.notPrincipals = str('notPrincipals', toPrincipalMatch);
  m.namespaces = str('namespaces', toStringMatch);
  m.notNamespaces = str('notNamespaces', toStringMatch);
  m.sourceIps = ips('ipBlocks');
  m.notSourceIps = ips('notIpBlocks');
  const sas = (k: string) => (src[k] === undefined ? undefined : convList(c, src[k], `${path}.${k}`, (s) => serviceAccountPrincipal(c, s)));
  const sa = sas('serviceAccounts');
  const notSa = sas('notServiceAccounts');
  if (sa || notSa) {
    // Istio rejects serviceAccounts next to principals/namespaces; positives would also collide in one field.
    if (m.principals || m.notPrincipals || m.namespaces || m.notNamespaces) c.flag(`${path}.serviceAccounts`, 'cannot be combined with principals or namespaces');
    else Object.assign(m, { principals: sa, notPrincipals: notSa });
  }
  const remote = ips('remoteIpBlocks');
  const notRemote = ips('notRemoteIpBlocks');
  // At L4 remote.ip is the source IP. Two positive lists would need an intersection: unenforceable.
  if (remote && m.sourceIps) c.flag(`${path}.remoteIpBlocks`, 'cannot be combined with ipBlocks at L4');
  else if (remote) m.sourceIps = remote;
  if (notRemote) m.notSourceIps = [...(m.notSourceIps ?? []), ...notRemote];
  return compact(m);
}

function operationMatch(c: Collector, op: unknown, path: string): Match {
  if (op === undefined || op === null) return {};
  if (!isObj(op)) return c.none(path, 'expected an object');
  for (const k of Object.keys(op)) {
    if (OPERATION_L7.includes(k)) c.flag(`${path}.${k}`, L7);
    else if (k !== 'ports' && k !== 'notPorts') c.flag(`${path}.${k}`, 'unknown field');
  }
  const ports = (k: string) => (op[k] === undefined ? undefined : convPorts(c, op[k], `${path}.${k}`));
  return compact({ destinationPorts: ports('ports'), notDestinationPorts: ports('notPorts') });
}

function convPorts(c: Collector, v: unknown, path: string): number[] | undefined {
  if (!Array.isArray(v)) return c.flag(path, 'expected a list of ports');
  const out: number[] = [];
  for (const [i, p] of v.entries()) {
    const n = toPort(p);
    if (n === undefined) return c.flag(`${path}[${i}]`, `invalid port ${JSON.stringify(p)}`);
    out.push(n);
  }
  return out.length ? out : undefined;
}

function whenMatch(c: Collector, cond: unknown, path: string): Match {
  if (!isObj(cond)) return c.none(path, 'expected an object');
  for (const k of Object.keys(cond)) if (k !== 'key' && k !== 'values' && k !== 'notValues') c.flag(`${path}.${k}`, 'unknown field');
  const key = cond.key;
  if (typeof key !== 'string' || !key) return c.none(`${path}.key`, 'required');
  if (!WHEN_L4.includes(key)) return c.none(`${path}.key`, isWhenL7(key) ? `${L7}: ${key}` : `unknown condition key ${key}`);
  if (cond.values === undefined && cond.notValues === undefined) return c.none(path, 'one of values or notValues is required');
  const vals = (k: 'values' | 'notValues') => {
    const v = cond[k];
    const p = `${path}.${k}`;
    if (v === undefined) return undefined;
    if (key === 'destination.port') return convPorts(c, v, p);
    if (key === 'source.ip' || key === 'remote.ip' || key === 'destination.ip') return convList(c, v, p, toIpBlock);
    return convList(c, v, p, key === 'source.principal' ? toPrincipalMatch : toStringMatch);
  };
  const field: Record<string, [keyof Match, keyof Match]> = {
    'source.ip': ['sourceIps', 'notSourceIps'],
    'remote.ip': ['sourceIps', 'notSourceIps'],
    'source.namespace': ['namespaces', 'notNamespaces'],
    'source.principal': ['principals', 'notPrincipals'],
    'destination.ip': ['destinationIps', 'notDestinationIps'],
    'destination.port': ['destinationPorts', 'notDestinationPorts'],
  };
  const [pos, neg] = field[key]!;
  return compact({ [pos]: vals('values'), [neg]: vals('notValues') });
}

/** Drops empty fields so `{}` reliably means "no constraint". */
function compact(m: Match): Match {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) if (Array.isArray(v) && v.length) out[k] = v;
  return out as Match;
}

const isEmpty = (m: Match) => Object.keys(m).length === 0;

/** A list field of the rule (`from`/`to`/`when`), or undefined (flagged) when not a list. */
function listField(c: Collector, r: Obj, k: string, path: string): unknown[] | undefined {
  const v = r[k];
  if (v === undefined || v === null) return undefined;
  return Array.isArray(v) ? v : c.flag(`${path}.${k}`, 'expected a list');
}

/** undefined when the rule is dropped (ALLOW with an unenforceable constraint). */
export function translateRule(rule: unknown, path: string, ctx: RuleContext): ModelRule | undefined {
  const c = new Collector(ctx);
  const clauses: { matches: Match[] }[] = [];
  // A clause with an unconstrained match is always true, so it is left out.
  const push = (matches: Match[]) => {
    if (matches.length && !matches.some(isEmpty)) clauses.push({ matches });
  };
  if (!isObj(rule)) c.flag(path, 'expected an object');
  else {
    for (const k of Object.keys(rule)) if (!['from', 'to', 'when'].includes(k)) c.flag(`${path}.${k}`, 'unknown field');
    const from = listField(c, rule, 'from', path);
    push((from ?? []).map((f, i) => {
      const p = `${path}.from[${i}]`;
      if (!isObj(f)) return c.none(p, 'expected an object');
      for (const k of Object.keys(f)) if (k !== 'source') c.flag(`${p}.${k}`, 'unknown field');
      return sourceMatch(c, f.source, `${p}.source`);
    }));
    const to = listField(c, rule, 'to', path);
    push((to ?? []).map((t, i) => {
      const p = `${path}.to[${i}]`;
      if (!isObj(t)) return c.none(p, 'expected an object');
      for (const k of Object.keys(t)) if (k !== 'operation') c.flag(`${p}.${k}`, 'unknown field');
      return operationMatch(c, t.operation, `${p}.operation`);
    }));
    const when = listField(c, rule, 'when', path);
    for (const [i, w] of (when ?? []).entries()) push([whenMatch(c, w, `${path}.when[${i}]`)]);
  }
  if (c.unenforceable && ctx.action === 'ALLOW') return undefined;
  return { clauses };
}
