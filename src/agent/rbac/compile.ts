// Policies compiled once per snapshot into plain predicates, so a connection costs a few
// closure calls, BlockList lookups and array scans.
import { BlockList, isIP } from 'node:net';
import type { AuthorizationPolicy, IpBlock, Match, StringMatch } from '../../api/mesh.ts';

/** What a policy can see of a connection, normalised once per connection. */
export interface ConnFacts {
  /** Istio's source.principal: "<trust-domain>/ns/<ns>/sa/<sa>", WITHOUT spiffe://; undefined = no identity. */
  principal?: string;
  /** Namespace of the source identity; undefined = no identity. */
  namespace?: string;
  srcIp: NormalIp;
  dstIp: NormalIp;
  dstPort: number;
}

export interface NormalIp {
  ip: string;
  family: 4 | 6 | 0;
}

/** IPv4-mapped IPv6 (from dual-stack sockets) is compared as IPv4, as a policy author means it. */
export function normalIp(ip: string): NormalIp {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const v = m ? m[1]! : ip;
  const family = isIP(v);
  return { ip: v, family: family === 4 || family === 6 ? family : 0 };
}

type Pred = (c: ConnFacts) => boolean;

export interface CompiledPolicy {
  key: string;
  policy: AuthorizationPolicy;
  matches: Pred;
}

function stringPred(m: StringMatch): (s: string) => boolean {
  if ('exact' in m) return (s) => s === m.exact;
  if ('prefix' in m) return (s) => s.startsWith(m.prefix);
  if ('suffix' in m) return (s) => s.endsWith(m.suffix);
  if ('presence' in m) return (s) => s.length > 0;
  throw new Error(`invalid string match ${JSON.stringify(m)}`);
}

/** One BlockList per family: Node's IPv6 rules would otherwise also match IPv4 addresses (e.g. ::/0). */
function ipPred(blocks: IpBlock[]): (ip: NormalIp) => boolean {
  const v4 = new BlockList();
  const v6 = new BlockList();
  for (const b of blocks) {
    const family = isIP(b.address);
    if (family === 0 || !Number.isInteger(b.length)) throw new Error(`invalid IP block ${b.address}/${b.length}`);
    // Throws on a prefix length out of range for the family.
    if (family === 4) v4.addSubnet(b.address, b.length, 'ipv4');
    else v6.addSubnet(b.address, b.length, 'ipv6');
  }
  return (a) => (a.family === 4 ? v4.check(a.ip, 'ipv4') : a.family === 6 ? v6.check(a.ip, 'ipv6') : false);
}

function portPred(ports: number[]): (p: number) => boolean {
  for (const p of ports) if (!Number.isInteger(p) || p < 0 || p > 65535) throw new Error(`invalid port ${p}`);
  return (p) => ports.includes(p);
}

/**
 * Positive list: some value must hold. Negative list: none may hold. A fact the connection lacks
 * (no identity) holds for no value, so a positive principals/namespaces list fails and a negative
 * one passes (as in ztunnel): notPrincipals: ["*"] thus means "no principal".
 */
function field<T, F>(pos: T[] | undefined, neg: T[] | undefined, compile: (v: T[]) => (f: F) => boolean, fact: (c: ConnFacts) => F | undefined, out: Pred[]) {
  if (pos?.length) {
    const p = compile(pos);
    out.push((c) => {
      const f = fact(c);
      return f !== undefined && p(f);
    });
  }
  if (neg?.length) {
    const n = compile(neg);
    out.push((c) => {
      const f = fact(c);
      return f === undefined || !n(f);
    });
  }
}

const anyString = (ms: StringMatch[]) => {
  const ps = ms.map(stringPred);
  return (s: string) => ps.some((p) => p(s));
};

/** Different fields AND-ed; a match without fields holds for every connection. */
export function compileMatch(m: Match): Pred {
  const checks: Pred[] = [];
  field(m.namespaces, m.notNamespaces, anyString, (c) => c.namespace, checks);
  field(m.principals, m.notPrincipals, anyString, (c) => c.principal, checks);
  field(m.sourceIps, m.notSourceIps, ipPred, (c) => c.srcIp, checks);
  field(m.destinationIps, m.notDestinationIps, ipPred, (c) => c.dstIp, checks);
  field(m.destinationPorts, m.notDestinationPorts, portPred, (c) => c.dstPort, checks);
  return (c) => checks.every((p) => p(c));
}

/**
 * Rules OR-ed, clauses AND-ed, matches OR-ed; zero rules match nothing, zero clauses match
 * everything. A rule that does not compile (bad IP block, port, string match) fails closed: it
 * never matches in an ALLOW policy and always matches in DENY/AUDIT.
 */
export function compilePolicy(key: string, policy: AuthorizationPolicy): CompiledPolicy {
  const rules: Pred[] = policy.rules.map((r) => {
    try {
      const clauses = r.clauses.map((cl) => {
        const ms = cl.matches.map(compileMatch);
        return (c: ConnFacts) => ms.some((m) => m(c));
      });
      return (c: ConnFacts) => clauses.every((cl) => cl(c));
    } catch {
      const v = policy.action !== 'ALLOW';
      return () => v;
    }
  });
  return { key, policy, matches: (c) => rules.some((r) => r(c)) };
}
