// The lab's wiring: one L2 segment (a bridge in its own namespace), a namespace per node on it,
// and per pod a namespace with a veth to its node. Routing is plain L3: each node routes its pod
// CIDR to the pods' veths and other nodes' pod CIDRs via their node IPs, as a simple CNI would.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { run, runSync } from '../util/exec.ts';
import { FABRIC_IP, type LabLayout, nodeIP, podCIDR } from './layout.ts';

const ip = (...args: string[]) => run(['ip', ...args]);
const inNetns = (ns: string, argv: string[], input?: string) => run(['nsenter', `--net=/run/netns/${ns}`, ...argv], { input });

async function sysctls(ns: string, kv: Record<string, string>) {
  await inNetns(ns, ['sysctl', '-q', '-w', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)]);
}

export async function createFabric(layout: LabLayout): Promise<void> {
  const f = layout.fabricNetns;
  await ip('netns', 'add', f);
  await ip('-n', f, 'link', 'set', 'lo', 'up');
  await ip('-n', f, 'link', 'add', 'br0', 'type', 'bridge');
  await ip('-n', f, 'addr', 'add', `${FABRIC_IP}/24`, 'dev', 'br0');
  await ip('-n', f, 'link', 'set', 'br0', 'up');
}

export async function createNode(layout: LabLayout, index: number, name: string): Promise<void> {
  const ns = layout.nodeNetns(name);
  const f = layout.fabricNetns;
  await ip('netns', 'add', ns);
  await ip('-n', ns, 'link', 'set', 'lo', 'up');
  await ip('-n', f, 'link', 'add', `n${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
  await ip('-n', f, 'link', 'set', `n${index}`, 'master', 'br0', 'up');
  await ip('-n', ns, 'addr', 'add', `${nodeIP(index)}/24`, 'dev', 'eth0');
  await ip('-n', ns, 'link', 'set', 'eth0', 'up');
  // Nodes forward pod traffic; strict reverse-path filtering would drop asymmetric hairpins.
  await sysctls(ns, { 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.conf.default.rp_filter': '0' });
}

/** Routes from every node to every other node's pod CIDR. */
export async function routeNodes(layout: LabLayout, nodes: string[]): Promise<void> {
  for (const [i, a] of nodes.entries())
    for (const [j] of nodes.entries()) if (i !== j) await ip('-n', layout.nodeNetns(a), 'route', 'replace', podCIDR(j), 'via', nodeIP(j));
}

export interface PodNet {
  netns: string;
  nodeNetns: string;
  hostVeth: string;
  ip: string;
  gateway: string;
}

export async function createPodNetwork(p: PodNet): Promise<void> {
  await ip('netns', 'add', p.netns);
  try {
    await ip('-n', p.netns, 'link', 'set', 'lo', 'up');
    await ip('-n', p.nodeNetns, 'link', 'add', p.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns);
    await ip('-n', p.nodeNetns, 'addr', 'add', `${p.gateway}/32`, 'dev', p.hostVeth);
    await ip('-n', p.nodeNetns, 'link', 'set', p.hostVeth, 'up');
    await ip('-n', p.nodeNetns, 'route', 'replace', `${p.ip}/32`, 'dev', p.hostVeth, 'src', p.gateway);
    await ip('-n', p.netns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
    await ip('-n', p.netns, 'link', 'set', 'eth0', 'up');
    await ip('-n', p.netns, 'route', 'add', p.gateway, 'dev', 'eth0', 'scope', 'link');
    await ip('-n', p.netns, 'route', 'add', 'default', 'via', p.gateway, 'dev', 'eth0');
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
