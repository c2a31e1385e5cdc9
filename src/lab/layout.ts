// Where a lab keeps its things, and how they are named. Every name a lab creates starts with the
// lab's name, so `weft down` can find what a crashed `weft up` left behind.
import { SocketAddress } from 'node:net';
import { join } from 'node:path';

export const LAB_NAME = /^[a-z][a-z0-9-]{0,23}$/;

export function checkLabName(name: string): void {
  if (!LAB_NAME.test(name)) throw new Error(`invalid lab name "${name}": use 1-24 lowercase letters, digits and '-', starting with a letter`);
}

/** Addressing: the same plan in every lab is fine because labs share no namespace. */
export const NODE_SUBNET = '172.18.0.0/24';
export const FABRIC_IP = '172.18.0.1';
export const nodeIP = (i: number) => `172.18.0.${i + 2}`;
export const podCIDR = (i: number) => `10.244.${i}.0/24`;
export const podGateway = (i: number) => `10.244.${i}.1`;
export const SERVICE_CIDR = '10.96.0.0/16';
/**
 * Dual stack: every node and pod also has an IPv6 address (ULA). Node i's pods get
 * fd00:10:244:<i>::<h> next to 10.244.<i>.<h>, so a pod's two addresses are easy to pair up.
 */
// Written as sockets print them (RFC 5952: fd00:10:244::5 on node 0), since addresses are compared as text.
const v6 = (text: string) => new SocketAddress({ address: text, family: 'ipv6' }).address;
export const FABRIC_IP6 = 'fd00:172:18::1';
export const nodeIP6 = (i: number) => v6(`fd00:172:18::${(i + 2).toString(16)}`);
/** Every node's pod CIDR, both families: the cluster's pod network, as agents are told it. */
export const POD_NETWORK = ['10.244.0.0/16', 'fd00:10:244::/48'];
export const podCIDR6 = (i: number) => `${v6(`fd00:10:244:${i.toString(16)}::`)}/64`;
export const podGateway6 = (i: number) => v6(`fd00:10:244:${i.toString(16)}::1`);
/** The IPv6 twin of a ClusterIP 10.96.<a>.<b>: fd00:10:96::<a*256+b> (services are dual stack too). */
export const serviceIP6 = (ip4: string) => {
  const [, , a, b] = ip4.split('.').map(Number) as [number, number, number, number];
  return v6(`fd00:10:96::${((a << 8) | b).toString(16)}`);
};
/** The IPv6 twin of a pod's IPv4 address 10.244.<i>.<h>. */
export const podIP6 = (ip4: string) => {
  const [, , i, h] = ip4.split('.').map(Number) as [number, number, number, number];
  return v6(`fd00:10:244:${i.toString(16)}::${h.toString(16)}`);
};
export const CLUSTER_DOMAIN = 'cluster.local';
export const MAX_NODES = 16;

export class LabLayout {
  constructor(readonly name: string) {
    checkLabName(name);
  }
  get stateDir() {
    return join(process.env.WEFT_RUN_DIR ?? '/run/weft', this.name);
  }
  get socketPath() {
    return join(this.stateDir, 'lab.sock');
  }
  get pidFile() {
    return join(this.stateDir, 'daemon.pid');
  }
  get daemonLog() {
    return join(this.stateDir, 'daemon.log');
  }
  get logDir() {
    return join(this.stateDir, 'logs');
  }
  podLog(ns: string, pod: string, container: string) {
    return join(this.logDir, `${ns}_${pod}_${container}.log`);
  }
  /** Namespace names: `<lab>.net` (the L2 segment), `<lab>.<node>`, `<lab>.<ns>.<pod>`. */
  get fabricNetns() {
    return `${this.name}.net`;
  }
  nodeNetns(node: string) {
    return `${this.name}.${node}`;
  }
  podNetns(ns: string, pod: string) {
    return `${this.name}.${ns}.${pod}`;
  }
  netnsPrefix() {
    return `${this.name}.`;
  }
  /** cgroup v2 tree: <root>/weft/<lab>/{daemon,nodes/<node>,pods/<ns>.<pod>} */
  cgroupRoot(cg2: string) {
    return join(cg2, 'weft', this.name);
  }
  podCgroup(cg2: string, ns: string, pod: string) {
    return join(this.cgroupRoot(cg2), 'pods', `${ns}.${pod}`);
  }
  nodeCgroup(cg2: string, node: string) {
    return join(this.cgroupRoot(cg2), 'nodes', node);
  }
  bpffsDir(bpffs: string) {
    return join(bpffs, 'weft', this.name);
  }
}
