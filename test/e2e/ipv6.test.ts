// IPv6 end to end on a dual-stack lab: mesh pods reach each other's IPv6 addresses over HBONE
// across nodes and through the node-local path on one node, with eBPF and with iptables capture,
// and plaintext from outside the mesh to an IPv6 address meets the same policies as over IPv4.
// (Before, capture sent every IPv6 connection to [::1]:15001, where nothing listened.)
// One lab for all of it: labs are slow to build.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, labName, leftovers, podExec, until, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/ipv6-app.yaml', import.meta.url).pathname;
const lab = labName('v6');
const tmp = mkdtempSync(join(tmpdir(), 'weft-v6-'));

type PodJ = { metadata: { name: string; namespace: string }; status: { podIP: string; podIPs?: { ip: string }[] } };
const pods = () => getJson<PodJ>(lab, 'pods');
let ips: Record<string, { v4: string; v6: string }> = {};
const url6 = (pod: string) => `http://[${ips[pod]!.v6}]:8080/`;
const inNode = (node: string, argv: string[]) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, ...argv], { encoding: 'utf8' });
const metrics = (node: string) => inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15020/metrics']).stdout;
const agentLog = (node: string) =>
  readFileSync(`/run/weft/${lab}/logs/agent_${node}.log`, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
/** curl from a pod: exit code (0 = a full HTTP answer) and output. */
const curl = (pod: string, args: string[]) => {
  const r = weft(['exec', '--name', lab, pod, '--', 'curl', '-s', '-m', '4', ...args], 20_000);
  return { code: r.code, out: r.stdout };
};
const answer = (pod: string, url: string) => JSON.parse(podExec(lab, pod, ['curl', '-sf', '-m', '5', '--retry', '3', '--retry-connrefused', '--retry-delay', '1', url])) as { pod: string };

describe('IPv6', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    ips = Object.fromEntries(pods().map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, { v4: p.status.podIP, v6: p.status.podIPs?.find((x) => x.ip.includes(':'))?.ip ?? '' }]));
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
    expect(leftovers(lab)).toEqual([]);
  });

  it('gives every pod an IPv4 and an IPv6 address, and the mesh state both', () => {
    for (const [pod, a] of Object.entries(ips)) {
      expect(a.v4, pod).toMatch(/^10\.244\.\d+\.\d+$/);
      expect(a.v6, pod).toMatch(/^fd00:10:244:/);
    }
    const dump = JSON.parse(inNode('node-0', ['curl', '-s', '-m', '5', 'http://127.0.0.1:15000/config_dump']).stdout) as { workloads: { name: string; addresses: string[] }[] };
    const server = dump.workloads.find((w) => w.name === 'server');
    expect(server?.addresses).toEqual([ips['v6/server']!.v4, ips['v6/server']!.v6]);
  });

  it('carries mesh traffic to another node over IPv6 as HBONE (eBPF and iptables capture)', async () => {
    // The app sees the destination it dialled as its peer (getpeername6), not [::1]:15001.
    const r = curl('v6/client', ['-w', '\\n%{remote_ip}', url6('v6/server')]);
    expect(r.code).toBe(0);
    const [body, peer] = r.out.trimEnd().split('\n');
    expect((JSON.parse(body!) as { pod: string }).pod).toBe('server');
    expect(peer).toBe(ips['v6/server']!.v6);
    // A dual-stack socket dialling a v4-mapped address is IPv4 to the mesh (and still HBONE).
    expect(answer('v6/client', `http://[::ffff:${ips['v6/server']!.v4}]:8080/`).pod).toBe('server');
    // In-pod iptables (ip6tables) captures IPv6 too; and the dual-stack 15008 of an iptables pod serves it.
    expect(answer('v6/ipt-client', url6('v6/local')).pod).toBe('local');
    const outLine = () => agentLog('node-0').find((l) => l.pod === 'v6/client' && l['dst.addr'] === `[${ips['v6/server']!.v6}]:8080`);
    await until(() => !!outLine() && agentLog('node-1').some((l) => l.pod === 'v6/server' && l.direction === 'inbound' && l.msg === 'connection complete'), 5_000, 'both access-log lines');
    const out = outLine();
    expect(out).toMatchObject({ protocol: 'HBONE', 'dst.hbone_addr': `[${ips['v6/server']!.v6}]:15008`, 'src.addr': expect.stringContaining(`[${ips['v6/client']!.v6}]:`) });
    const inb = agentLog('node-1').find((l) => l.pod === 'v6/server' && l.direction === 'inbound');
    expect(inb).toMatchObject({ protocol: 'HBONE', 'src.identity': 'spiffe://cluster.local/ns/v6/sa/default', 'src.addr': expect.stringContaining(`[${ips['v6/client']!.v6}]:`) });
    await until(() => agentLog('node-1').some((l) => l.pod === 'v6/ipt-client' && l.direction === 'outbound'), 5_000, 'the iptables pod\'s access-log line');
    expect(agentLog('node-1').find((l) => l.pod === 'v6/ipt-client' && l.direction === 'outbound')).toMatchObject({ protocol: 'HBONE', 'dst.hbone_addr': `[${ips['v6/local']!.v6}]:15008` });
    // Istio's metrics count it as mutual TLS on both ends.
    expect(metrics('node-1')).toMatch(/istio_tcp_connections_opened_total\{reporter="destination",source_workload="client",[^}]*destination_workload="server",[^}]*connection_security_policy="mutual_tls"\} [1-9]/);
    expect(metrics('node-0')).toMatch(/istio_tcp_connections_opened_total\{reporter="source",source_workload="client",[^}]*destination_workload="server",[^}]*connection_security_policy="mutual_tls"\} [1-9]/);
  });

  it('carries mesh traffic on one node over IPv6 through the node-local path', async () => {
    expect(answer('v6/client', url6('v6/local')).pod).toBe('local');
    expect(answer('v6/client', url6('v6/ipt-server')).pod).toBe('ipt-server');
    const lines = () => agentLog('node-0').filter((l) => l.pod === 'v6/local' && l.direction === 'inbound' && String(l['src.addr']).startsWith(`[${ips['v6/client']!.v6}]:`));
    await until(() => lines().length > 0, 5_000, 'the node-local access-log line');
    expect(lines().at(-1)).toMatchObject({ node_local: true, 'src.identity': 'spiffe://cluster.local/ns/v6/sa/default', 'dst.addr': `[${ips['v6/local']!.v6}]:8080` });
  });

  it('passes IPv6 to a destination outside the mesh through in plaintext', async () => {
    const dst = `[${ips['plain/outsider']!.v6}]:8080`;
    expect(answer('v6/client', url6('plain/outsider')).pod).toBe('outsider');
    expect(answer('v6/ipt-client', url6('plain/outsider')).pod).toBe('outsider');
    const line = (node: string, pod: string) => agentLog(node).find((l) => l.pod === pod && l['dst.addr'] === dst && l.msg === 'connection complete');
    await until(() => !!line('node-0', 'v6/client') && !!line('node-1', 'v6/ipt-client'), 5_000, 'both access-log lines');
    expect(line('node-0', 'v6/client')).toMatchObject({ direction: 'outbound', protocol: 'TCP' });
    expect(line('node-1', 'v6/ipt-client')).toMatchObject({ direction: 'outbound', protocol: 'TCP' });
  });

  it('reaches an IPv6 ClusterIP: the agent for mesh pods, kube-proxy (ip6 nftables) for the rest', async () => {
    const svc = getJson<{ metadata: { name: string }; spec: { clusterIPs?: string[] } }>(lab, 'services', 'v6').find((s) => s.metadata.name === 'server')!;
    const vip6 = svc.spec.clusterIPs?.find((a) => a.includes(':'));
    expect(vip6).toMatch(/^fd00:10:96::/);
    expect(answer('v6/client', `http://[${vip6}]/`).pod).toBe('server');
    expect(answer('plain/outsider', `http://[${vip6}]/`).pod).toBe('server');
    // The mesh client went over HBONE to the endpoint's IPv6 address, and the service is named.
    const line = () => agentLog('node-0').find((l) => l.pod === 'v6/client' && l['dst.addr'] === `[${vip6}]:80`);
    await until(() => !!line(), 5_000, 'the access-log line');
    expect(line()).toMatchObject({ protocol: 'HBONE', 'dst.hbone_addr': `[${ips['v6/server']!.v6}]:15008`, 'dst.service': 'server.v6.svc.cluster.local' });
  });

  it('applies policy to plaintext from outside the mesh over IPv6, as over IPv4', async () => {
    const outsider6 = ips['plain/outsider']!.v6;
    // PERMISSIVE, no policy: plaintext reaches mesh pods, captured by eBPF (sk_lookup) and by ip6tables.
    expect(answer('plain/outsider', url6('v6/local')).pod).toBe('local');
    expect(answer('plain/outsider', url6('v6/ipt-server')).pod).toBe('ipt-server');
    await until(() => agentLog('node-0').some((l) => l.pod === 'v6/ipt-server' && l.protocol === 'TCP' && String(l['src.addr']).startsWith(`[${outsider6}]:`)), 5_000, 'the plaintext access-log line');
    // The server admits only identities of its namespace: no identity over IPv6 is no exception.
    const allow = `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: mesh-only, namespace: v6}\nspec:\n  selector: {matchLabels: {app: server}}\n  action: ALLOW\n  rules: [{from: [{source: {principals: ["cluster.local/ns/v6/sa/default"]}}]}]\n`;
    // And an IPv6 source block is denied everywhere in the namespace.
    const deny = `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-outsider, namespace: v6}\nspec:\n  action: DENY\n  rules: [{from: [{source: {ipBlocks: ["${outsider6}/128"]}}]}]\n`;
    writeFileSync(join(tmp, 'policy.yaml'), `${allow}---\n${deny}`);
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'policy.yaml')]).code).toBe(0);
    await until(() => curl('plain/outsider', [url6('v6/local')]).code !== 0, 20_000, 'the DENY policy to reach the agent');
    expect(curl('plain/outsider', [url6('v6/ipt-server')]).code).not.toBe(0);
    expect(curl('plain/outsider', [url6('v6/server')]).code).not.toBe(0);
    // The block names the IPv6 address only: the same pod over IPv4 still gets in, and mesh clients do.
    expect(curl('plain/outsider', [`http://${ips['v6/local']!.v4}:8080/`]).code).toBe(0);
    expect(answer('v6/client', url6('v6/server')).pod).toBe('server');
    await until(() => agentLog('node-1').some((l) => l.pod === 'v6/server' && l.response_flags === 'DENY'), 5_000, 'the denial on node-1');
    const denied = agentLog('node-0').filter((l) => l.response_flags === 'DENY' && String(l['src.addr']).startsWith(`[${outsider6}]:`));
    expect(new Set(denied.map((l) => l.pod))).toEqual(new Set(['v6/local', 'v6/ipt-server']));
    expect(denied.every((l) => String(l.policy).includes('v6/no-outsider'))).toBe(true);
  });
});
