// The node's half of kubelet probes, istio-cni's host rules in nftables. The in-pod capture
// (sk_lookup, in-pod iptables) lets TCP from 169.254.7.127 through to the app; these rules make
// that address mean "the node itself":
// - a connection the node opens from a local socket (the kubelet's probes) to an enrolled pod
//   leaves with source 169.254.7.127, so probes reach the app under STRICT and see the app, not
//   the agent. Forwarded packets (other pods, kube-proxy from outside) have no local socket and
//   keep their source: captured as always;
// - a packet that arrives claiming 169.254.7.127 is dropped before routing, so no pod and nothing
//   off the node can use the exemption.
// They live in the node's netns: the host's on Kubernetes (the agent pod enters it through
// /proc/1/ns/net, being hostPID), the node's own in the lab, where the agent runs. The table stays
// when the agent stops, as istio-cni's host rules do: probes keep passing through an agent
// restart; `nft delete table ip weft_node` removes it.
import { WEFT } from '../../bpf/index.ts';
import { hasCommand, run } from '../../util/exec.ts';

export const PROBE_SNAT_ADDRESS = [24, 16, 8, 0].map((s) => (WEFT.PROBE_SNAT_IP4 >>> s) & 255).join('.');
export const NODE_TABLE = 'weft_node';
const SET = 'probe_dst';
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/**
 * Table, chains and rules; idempotent, and the set of pods is left as it is, so a restarting agent
 * does not stop the probes of the pods it is about to re-adopt. One nft transaction: all or nothing.
 */
export function renderNodeRules(): string {
  const t = `ip ${NODE_TABLE}`;
  return [
    `add table ${t}`,
    `add set ${t} ${SET} { type ipv4_addr; }`,
    // Before any other source NAT (the first binding of a connection wins).
    `add chain ${t} probe_snat { type nat hook postrouting priority srcnat - 10; policy accept; }`,
    `add chain ${t} probe_spoof { type filter hook prerouting priority raw - 10; policy accept; }`,
    `flush chain ${t} probe_snat`,
    `flush chain ${t} probe_spoof`,
    // `meta skuid` reads the uid of the packet's local socket and fails to match without one:
    // iptables' `-m owner --socket-exists`, which istio-cni uses here.
    `add rule ${t} probe_snat meta l4proto tcp ip daddr @${SET} meta skuid >= 0 snat ip to ${PROBE_SNAT_ADDRESS}`,
    `add rule ${t} probe_spoof iifname != "lo" ip saddr ${PROBE_SNAT_ADDRESS} drop`,
    '',
  ].join('\n');
}

/** The set of enrolled pods' IPv4 addresses, replaced in one transaction. */
export function renderProbeTargets(ips: string[]): string {
  const v4 = [...new Set(ips.filter((ip) => IPV4.test(ip)))].sort();
  const t = `ip ${NODE_TABLE}`;
  return [`flush set ${t} ${SET}`, ...(v4.length ? [`add element ${t} ${SET} { ${v4.join(', ')} }`] : []), ''].join('\n');
}

export class NodeProbeRules {
  private constructor(private readonly nft: (input: string) => Promise<string>) {}

  /**
   * Installs the rules in `netns` (a path such as /proc/1/ns/net; none: this process's own);
   * fails, naming nft's complaint, when it cannot.
   */
  static async install(netns?: string): Promise<NodeProbeRules> {
    for (const t of ['nft', ...(netns ? ['nsenter'] : [])]) if (!hasCommand(t)) throw new Error(`the node's probe rules need ${t} (install nftables and util-linux)`);
    const rules = new NodeProbeRules((input) => run([...(netns ? ['nsenter', `--net=${netns}`] : []), 'nft', '-f', '-'], { input }));
    await rules.nft(renderNodeRules()).catch((e: Error) => {
      throw new Error(`cannot install the node's probe rules (table ip ${NODE_TABLE}${netns ? ` in ${netns}` : ''}): ${e.message}`, { cause: e });
    });
    return rules;
  }

  /** Probes from the node to these pods leave from 169.254.7.127; every other pod sees the node's address. */
  async sync(ips: string[]): Promise<void> {
    await this.nft(renderProbeTargets(ips));
  }
}
