// The lab plays kube-proxy for pods outside the mesh: ClusterIP:port is DNATed in each node's
// namespace to a ready endpoint, picked at random per connection. The whole table is replaced in
// one nft transaction, so a change is never half-applied. IPv4 and IPv6 ClusterIPs get a table
// each (ip, ip6); endpoints of a service entry are of its ClusterIP's family. KubeProxy puts the
// table in every node, rewriting it only when it changed.
import { nftApply } from './network.ts';

export interface ServiceEndpoints {
  clusterIP: string;
  port: number;
  endpoints: { ip: string; port: number }[];
}

export const KUBE_PROXY_TABLE = 'weft_kubeproxy';

export function renderKubeProxy(services: ServiceEndpoints[]): string {
  const v6 = services.filter((s) => s.clusterIP.includes(':'));
  return renderTable('ip', services.filter((s) => !v6.includes(s))) + renderTable('ip6', v6);
}

function renderTable(family: 'ip' | 'ip6', services: ServiceEndpoints[]): string {
  const nat: string[] = [];
  const reject: string[] = [];
  const hairpin = new Set<string>();
  for (const s of services) {
    const match = `${family} daddr ${s.clusterIP} tcp dport ${s.port}`;
    if (s.endpoints.length === 0) {
      reject.push(`${match} reject with tcp reset`);
      continue;
    }
    const map = s.endpoints.map((e, i) => `${i} : ${e.ip} . ${e.port}`).join(', ');
    nat.push(`${match} dnat ${family} to numgen random mod ${s.endpoints.length} map { ${map} }`);
    for (const e of s.endpoints) hairpin.add(e.ip);
  }
  // A pod reaching itself through its service would see its own address as the source: masquerade.
  const post = [...hairpin].sort().map((a) => `ct status dnat ${family} saddr ${a} ${family} daddr ${a} masquerade`);
  const t = KUBE_PROXY_TABLE;
  const chain = (name: string, hook: string, rules: string[]) =>
    [`  chain ${name} {`, `    ${hook}`, ...rules.map((r) => `    ${r}`), '  }'].join('\n');
  return [
    `table ${family} ${t} {}`,
    `delete table ${family} ${t}`,
    `table ${family} ${t} {`,
    chain('prerouting', 'type nat hook prerouting priority dstnat; policy accept;', nat),
    chain('output', 'type nat hook output priority -100; policy accept;', nat),
    chain('postrouting', 'type nat hook postrouting priority srcnat; policy accept;', post),
    chain('forward', 'type filter hook forward priority filter; policy accept;', reject),
    '}',
    '',
  ].join('\n');
}

/** The rules in every node's namespace. */
export class KubeProxy {
  private lastRules = new Map<string, string>();

  constructor(
    private readonly nodes: readonly { name: string; netns: string }[],
    private readonly onError: (msg: string) => void,
  ) {}

  async sync(services: ServiceEndpoints[]): Promise<void> {
    const rules = renderKubeProxy(services);
    for (const n of this.nodes) {
      if (this.lastRules.get(n.name) === rules) continue;
      try {
        await nftApply(n.netns, rules);
        this.lastRules.set(n.name, rules);
      } catch (e) {
        this.onError(`node ${n.name}: kube-proxy rules: ${(e as Error).message}`);
      }
    }
  }
}
