// The node's probe rules in real namespaces: a "node" with two "pods" on veths, as the lab and a
// simple CNI wire them. What the pods see as the source of a connection is what counts.
import { execFileSync } from 'node:child_process';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NodeProbeRules, PROBE_SNAT_ADDRESS } from '../../../src/agent/capture/node-probes.ts';
import { listenerInNetns } from '../../../src/bpf/index.ts';
import { Fixture, closeServer, podClient, serve, sh, uniq } from '../../bpf/env.ts';

const f = new Fixture();
let node = '';
const pods = { target: { netns: '', ip: '10.244.0.2' }, other: { netns: '', ip: '10.244.0.3' } };
const GW = '10.244.0.1';
const servers: net.Server[] = [];
const nft = (ns: string, input: string) => execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'nft', '-f', '-'], { input, encoding: 'utf8', timeout: 10_000 });
/** The address the target pod sees a connection come from (its echo server reports it). */
const seenFrom = async (netns: string) => {
  const r = await podClient({ netns }, pods.target.ip, 8080);
  return r.ok ? r.reply : `failed: ${r.error}`;
};

describe('node probe rules', () => {
  beforeAll(async () => {
    node = f.netns(uniq('np'));
    sh('ip', 'netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0');
    for (const [i, p] of Object.values(pods).entries()) {
      p.netns = f.netns(uniq('np'));
      const veth = `${p.netns.slice(-6)}h`;
      sh('ip', '-n', node, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', p.netns);
      if (i === 0) sh('ip', '-n', node, 'addr', 'add', `${GW}/32`, 'dev', veth);
      sh('ip', '-n', node, 'link', 'set', veth, 'up');
      sh('ip', '-n', node, 'route', 'add', `${p.ip}/32`, 'dev', veth, 'src', GW);
      sh('ip', '-n', p.netns, 'addr', 'add', `${p.ip}/32`, 'dev', 'eth0');
      sh('ip', '-n', p.netns, 'link', 'set', 'eth0', 'up');
      sh('ip', '-n', p.netns, 'route', 'add', GW, 'dev', 'eth0', 'scope', 'link');
      sh('ip', '-n', p.netns, 'route', 'add', 'default', 'via', GW);
    }
    const fd = listenerInNetns(`/run/netns/${pods.target.netns}`, '0.0.0.0', 8080);
    servers.push(await serve(fd, (s) => s.remoteAddress ?? '?'));
    // Counts what reaches the target pod from the probe address with a given source port.
    nft(pods.target.netns, 'add table ip t\nadd chain ip t c { type filter hook prerouting priority raw; }\nadd rule ip t c ip saddr 169.254.7.127 tcp sport 40999 counter\n');
  });
  afterAll(async () => {
    for (const s of servers) await closeServer(s);
    f.cleanup();
  });

  let rules: NodeProbeRules;
  it('installs idempotently in the given netns and keeps the pod set across reinstalls', async () => {
    await (await NodeProbeRules.install(`/run/netns/${node}`)).sync([pods.target.ip, 'fd00::2']);
    rules = await NodeProbeRules.install(`/run/netns/${node}`); // an agent restart
    const table = sh('nsenter', `--net=/run/netns/${node}`, 'nft', 'list', 'table', 'ip', 'weft_node');
    expect(table).toContain(`elements = { ${pods.target.ip} }`);
    expect(table.match(/snat to/g)).toHaveLength(1);
    expect(table.match(/ drop/g)).toHaveLength(1);
  });

  it("gives the node's own connections to an enrolled pod the probe address, and nothing else", async () => {
    expect(PROBE_SNAT_ADDRESS).toBe('169.254.7.127');
    expect(await seenFrom(node)).toBe(PROBE_SNAT_ADDRESS); // the kubelet
    expect(await seenFrom(pods.other.netns)).toBe(pods.other.ip); // another pod, forwarded by the node
    await rules.sync([pods.other.ip]); // the target released
    expect(await seenFrom(node)).toBe(GW);
    await rules.sync([pods.target.ip]);
    expect(await seenFrom(node)).toBe(PROBE_SNAT_ADDRESS);
  });

  it('drops packets from a pod that claims the probe address before they reach any pod', () => {
    sh('ip', '-n', pods.other.netns, 'addr', 'add', `${PROBE_SNAT_ADDRESS}/32`, 'dev', 'eth0');
    const spoof = [
      'import socket',
      's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
      `s.bind(("${PROBE_SNAT_ADDRESS}", 40999)); s.settimeout(1.5)`,
      'try:',
      `    s.connect(("${pods.target.ip}", 8080)); print("connected")`,
      'except OSError as e:',
      '    print(type(e).__name__)',
    ].join('\n');
    const out = execFileSync('nsenter', [`--net=/run/netns/${pods.other.netns}`, 'python3', '-c', spoof], { encoding: 'utf8', timeout: 10_000 }).trim();
    expect(out).not.toBe('connected');
    const arrived = sh('nsenter', `--net=/run/netns/${pods.target.netns}`, 'nft', 'list', 'table', 'ip', 't');
    expect(arrived).toMatch(/counter packets 0 bytes 0/);
  });
});
