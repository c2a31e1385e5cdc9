// The lab's wiring: one L2 segment (a bridge in its own namespace), a namespace per node on it,
// and per pod a namespace with a veth to its node. Routing is plain L3: each node routes its pod
// CIDR to the pods' veths and other nodes' pod CIDRs via their node IPs, as a simple CNI would.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { run, runSync } from '../util/exec.ts';
import { FABRIC_IP, FABRIC_IP6, type LabLayout, nodeIP, nodeIP6, podCIDR, podCIDR6 } from './layout.ts';

const ip = (...args: string[]) => run(['ip', ...args]);
const inNetns = (ns: string, argv: string[], input?: string) => run(['nsenter', `--net=/run/netns/${ns}`, ...argv], { input });

async function sysctls(ns: string, kv: Record<string, string>) {
  await inNetns(ns, ['sysctl', '-q', '-w', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
}

/**
 * No duplicate address detection on interfaces made later in this netns: addresses are unique by
 * construction, and DAD would keep each new IPv6 address (and link-local, which neighbour
 * discovery uses) tentative, unusable, for a second or more after a pod starts.
 */
const NO_DAD = { 'net.ipv6.conf.all.accept_dad': '0', 'net.ipv6.conf.default.accept_dad': '0' };

export async function createFabric(layout: LabLayout): Promise<void> {
  const f = layout.fabricNetns;
  await ip('netns', 'add', f);
  await sysctls(f, NO_DAD);
  await ip('-n', f, 'link', 'set', 'lo', 'up');
  // No MLD snooping: with no querier on the segment it only risks dropping neighbour discovery.
  await ip('-n', f, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0');
  await ip('-n', f, 'addr', 'add', `${FABRIC_IP}/24`, 'dev', 'br0');
  await ip('-n', f, '-6', 'addr', 'add', `${FABRIC_IP6}/64`, 'dev', 'br0', 'nodad');
  await ip('-n', f, 'link', 'set', 'br0', 'up');
}

export async function createNode(layout: LabLayout, index: number, name: string): Promise<void> {
  const ns = layout.nodeNetns(name);
  const f = layout.fabricNetns;
  await ip('netns', 'add', ns);
  await sysctls(ns, NO_DAD);
  await ip('-n', ns, 'link', 'set', 'lo', 'up');
  await ip('-n', f, 'link', 'add', `n${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  await ip('-n', f, 'link', 'set', `n${index}`, 'master', 'br0', 'up');
  await ip('-n', ns, 'addr', 'add', `${nodeIP(index)}/24`, 'dev', 'eth0');
  await ip('-n', ns, '-6', 'addr', 'add', `${nodeIP6(index)}/64`, 'dev', 'eth0', 'nodad');
  await ip('-n', ns, 'link', 'set', 'eth0', 'up');
  // Nodes forward pod traffic; strict reverse-path filtering would drop asymmetric hairpins.
  await sysctls(ns, { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.conf.default.rp_filter': '0', 'net.ipv6.conf.all.forwarding': '1' });
}

/** Routes from every node to every other node's pod CIDR. */
export async function routeNodes(layout: LabLayout, nodes: string[]): Promise<void> {
  // The fabric is where the control plane runs (as istiod in a pod network): pods reach it, as
  // waypoints must for their certificates and configuration, and it answers them.
  for (const [j] of nodes.entries()) {
    await ip('-n', layout.fabricNetns, 'route', 'replace', podCIDR(j), 'via', nodeIP(j));
    await ip('-n', layout.fabricNetns, '-6', 'route', 'replace', podCIDR6(j), 'via', nodeIP6(j));
  }
  for (const [i, a] of nodes.entries())
    for (const [j] of nodes.entries())
      if (i !== j) {
        await ip('-n', layout.nodeNetns(a), 'route', 'replace', podCIDR(j), 'via', nodeIP(j));
        await ip('-n', layout.nodeNetns(a), '-6', 'route', 'replace', podCIDR6(j), 'via', nodeIP6(j));
      }
}

export interface PodNet {
  netns: string;
  nodeNetns: string;
  hostVeth: string;
  ip: string;
  gateway: string;
  ip6: string;
  gateway6: string;
}

export async function createPodNetwork(p: PodNet): Promise<void> {
  await ip('netns', 'add', p.netns);
  try {
    await sysctls(p.netns, NO_DAD); // before eth0 is made in it
    await ip('-n', p.netns, 'link', 'set', 'lo', 'up');
    await ip('-n', p.nodeNetns, 'link', 'add', p.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns);
    await ip('-n', p.nodeNetns, 'addr', 'add', `${p.gateway}/32`, 'dev', p.hostVeth);
    await ip('-n', p.nodeNetns, 'link', 'set', p.hostVeth, 'up');
    await ip('-n', p.nodeNetns, 'route', 'replace', `${p.ip}/32`, 'dev', p.hostVeth, 'src', p.gateway);
    await ip('-n', p.netns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
    await ip('-n', p.netns, 'link', 'set', 'eth0', 'up');
    await ip('-n', p.netns, 'route', 'add', p.gateway, 'dev', 'eth0', 'scope', 'link');
    await ip('-n', p.netns, 'route', 'add', 'default', 'via', p.gateway, 'dev', 'eth0');
    // The same for IPv6: a /128 each side, the node's end as the default gateway.
    await ip('-n', p.nodeNetns, '-6', 'addr', 'add', `${p.gateway6}/128`, 'dev', p.hostVeth, 'nodad');
    await ip('-n', p.nodeNetns, '-6', 'route', 'replace', `${p.ip6}/128`, 'dev', p.hostVeth, 'src', p.gateway6);
    await ip('-n', p.netns, '-6', 'addr', 'add', `${p.ip6}/128`, 'dev', 'eth0', 'nodad');
    await ip('-n', p.netns, '-6', 'route', 'add', `${p.gateway6}/128`, 'dev', 'eth0');
    await ip('-n', p.netns, '-6', 'route', 'add', 'default', 'via', p.gateway6, 'dev', 'eth0');
  } catch (e) {
    await deleteNetns(p.netns);
    throw e;
  }
}


/** Deleting a namespace takes its veth with it (and the peer in the node namespace). */
export async function deleteNetns(ns: string): Promise<void> {
  await run(['ip', 'netns', 'del', ns], { allowFail: true });
  rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
}

export function listNetns(): string[] {
  const r = runSync(['ip', 'netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

/** Files that `ip netns exec` binds over /etc inside the pod: its own hosts and resolv.conf. */
export function writeNetnsEtc(ns: string, files: Record<string, string>): void {
  const dir = `/etc/netns/${ns}`;
  mkdirSync(dir, { recursive: true });
  // Written in place (same inode): a bind mount of the file keeps showing current contents.
  for (const [name, content] of Object.entries(files)) writeFileSync(`${dir}/${name}`, content);
}

export async function nftApply(ns: string, ruleset: string): Promise<void> {
  await inNetns(ns, ['nft', '-f', '-'], ruleset);
}
