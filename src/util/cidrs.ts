// Address ranges given as CIDR text (flags, env), as a node:net BlockList to test addresses against.
import { BlockList, isIP } from 'node:net';

/** Parses `a.b.c.d/n` and IPv6 `x::/n` entries; throws naming `what` and the entry that is wrong. */
export function parseCidrs(list: readonly string[], what: string): BlockList {
  const b = new BlockList();
  for (const raw of list) {
    const entry = raw.trim();
    const m = /^([^/]+)\/(\d{1,3})$/.exec(entry);
    const family = m ? isIP(m[1]!) : 0;
    const prefix = m ? Number(m[2]) : NaN;
    if (!m || family === 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`${what}: "${entry}" is not a CIDR (a.b.c.d/n or x:y::/n)`);
    b.addSubnet(m[1]!, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
  return b;
}
