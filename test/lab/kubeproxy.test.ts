import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderKubeProxy } from '../../src/lab/kubeproxy.ts';
import { runSync } from '../../src/util/exec.ts';

// The rendered ruleset is loaded into a real nftables instance in a scratch namespace.
const ns = `weft-kp-${randomBytes(3).toString('hex')}`;
const nft = (input: string, ...args: string[]) => runSync(['nsenter', `--net=/run/netns/${ns}`, 'nft', ...args], { input });

describe('kube-proxy rules', () => {
  beforeAll(() => {
    expect(runSync(['ip', 'netns', 'add', ns]).code).toBe(0);
  });
  afterAll(() => {
    runSync(['ip', 'netns', 'del', ns]);
  });

  const services = [
    { clusterIP: '10.96.0.10', port: 80, endpoints: [{ ip: '10.244.0.2', port: 8080 }, { ip: '10.244.1.3', port: 8080 }] },
    { clusterIP: '10.96.0.11', port: 443, endpoints: [] },
  ];

  it('loads into nftables and replaces the previous table atomically', () => {
    const rules = renderKubeProxy(services);
    let r = nft(rules, '-f', '-');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    r = nft(renderKubeProxy(services.slice(0, 1)), '-f', '-'); // second load replaces, not appends
    expect(r.code).toBe(0);
    const listed = nft('', 'list', 'ruleset').stdout;
    expect(listed.match(/dnat ip to numgen random mod 2 map \{ 0 : 10\.244\.0\.2 \. 8080, 1 : 10\.244\.1\.3 \. 8080 \}/g)).toHaveLength(2); // prerouting + output
    expect(listed).not.toContain('10.96.0.11');
  });

  it('gives IPv6 ClusterIPs a table of their own, loaded and replaced the same way', () => {
    const dual = [...services, { clusterIP: 'fd00:10:96::a', port: 80, endpoints: [{ ip: 'fd00:10:244::2', port: 8080 }, { ip: 'fd00:10:244:1::3', port: 8080 }] }, { clusterIP: 'fd00:10:96::b', port: 443, endpoints: [] }];
    expect(nft(renderKubeProxy(dual), '-f', '-').stderr).toBe('');
    let listed = nft('', 'list', 'table', 'ip6', 'weft_kubeproxy').stdout;
    expect(listed.match(/ip6 daddr fd00:10:96::a tcp dport 80 dnat ip6 to numgen random mod 2 map \{ 0 : fd00:10:244::2 \. 8080, 1 : fd00:10:244:1::3 \. 8080 \}/g)).toHaveLength(2);
    expect(listed).toContain('ip6 daddr fd00:10:96::b tcp dport 443 reject with tcp reset');
    expect(nft('', 'list', 'table', 'ip', 'weft_kubeproxy').stdout).not.toContain('fd00');
    expect(nft(renderKubeProxy(services), '-f', '-').code).toBe(0); // the IPv6 service is gone again
    listed = nft('', 'list', 'table', 'ip6', 'weft_kubeproxy').stdout;
    expect(listed).not.toContain('fd00:10:96::a');
  });

  it('rejects connections to a service without ready endpoints and masquerades hairpins', () => {
    const rules = renderKubeProxy(services);
    expect(rules).toContain('ip daddr 10.96.0.11 tcp dport 443 reject with tcp reset');
    expect(rules).toContain('ct status dnat ip saddr 10.244.0.2 ip daddr 10.244.0.2 masquerade');
  });
});
