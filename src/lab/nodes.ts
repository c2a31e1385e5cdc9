// The lab's nodes: a network namespace each on a shared fabric, with an IPv4 and an IPv6 pod CIDR
// and a cgroup for what runs on the node (its agent, its pods).
import { mkdirSync } from 'node:fs';
import { type LabLayout, MAX_NODES, nodeIP, nodeIP6, podCIDR, podCIDR6 } from './layout.ts';
import { createFabric, createNode, routeNodes } from './network.ts';

export interface LabNode {
  name: string;
  index: number;
  ip: string;
  ip6: string;
  netns: string;
  podCIDR: string;
  podCIDR6: string;
}

/** Creates the fabric and `count` nodes, adding each to `nodes` as it is made. */
export async function createNodes(layout: LabLayout, count: number, cg2: string, nodes: LabNode[]): Promise<void> {
  if (count < 1 || count > MAX_NODES) throw new Error(`--nodes must be between 1 and ${MAX_NODES}`);
  mkdirSync(layout.cgroupRoot(cg2), { recursive: true });
  await createFabric(layout);
  for (let i = 0; i < count; i++) {
    const name = `node-${i}`;
    await createNode(layout, i, name);
    nodes.push({ name, index: i, ip: nodeIP(i), ip6: nodeIP6(i), netns: layout.nodeNetns(name), podCIDR: podCIDR(i), podCIDR6: podCIDR6(i) });
    mkdirSync(layout.nodeCgroup(cg2, name), { recursive: true });
  }
  await routeNodes(layout, nodes.map((n) => n.name));
}
