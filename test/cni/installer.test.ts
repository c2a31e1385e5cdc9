import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installOnce, installRuntime, kubeServerFromEnv, stopInstaller, uninstall, type CniInstallOptions } from '../../src/cni/installer.ts';
import { loadKubeconfig } from '../../src/kube/client.ts';
import { FakeApiServer } from '../control/config/fake-apiserver.ts';

const CALICO = { name: 'k8s-pod-network', cniVersion: '1.0.0', plugins: [{ type: 'calico' }] };

describe('weft cni-install', () => {
  let root: string;
  let o: CniInstallOptions;
  let wrapper: string;

  beforeAll(() => {
    // A fake node: the container's view under root/host, the "host" paths are root/host/... too
    // (the wrapper and kubeconfig name host paths, so they must exist for the run below).
    root = mkdtempSync(join(tmpdir(), 'weft-cni-install-'));
    const host = join(root, 'host');
    for (const d of ['opt/cni/bin', 'etc/cni/net.d', 'var/lib/weft/cni', 'sa']) mkdirSync(join(host, d), { recursive: true });
    writeFileSync(join(host, 'sa/token'), 'tok-1');
    writeFileSync(join(host, 'sa/ca.crt'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    writeFileSync(join(host, 'etc/cni/net.d/10-calico.conflist'), JSON.stringify(CALICO));
    o = {
      cniBinDir: join(host, 'opt/cni/bin'),
      cniConfDir: join(host, 'etc/cni/net.d'),
      installDir: join(host, 'var/lib/weft/cni'),
      hostInstallDir: join(host, 'var/lib/weft/cni'),
      agentSocket: '/var/run/weft/agent.sock',
      excludeNamespaces: ['kube-system', 'istio-system'],
      serviceAccountDir: join(host, 'sa'),
      kubeServer: 'https://10.96.0.1:443',
    };
    wrapper = installRuntime(o.installDir, o.hostInstallDir).wrapper;
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('installs the plugin, its kubeconfig and the chain entry; a second pass changes nothing', () => {
    const first = installOnce(o, wrapper);
    expect(first.confFile).toBe(join(o.cniConfDir, '10-calico.conflist'));
    expect(first.changed).toHaveLength(3);
    expect(statSync(join(o.cniBinDir, 'weft-cni')).mode & 0o777).toBe(0o755);
    const conf = JSON.parse(readFileSync(first.confFile!, 'utf8')) as typeof CALICO;
    expect(conf.plugins.at(-1)).toEqual({ type: 'weft-cni', kubeconfig: `${o.hostInstallDir}/kubeconfig`, agentSocket: '/var/run/weft/agent.sock', excludeNamespaces: ['kube-system', 'istio-system'] });
    const kc = loadKubeconfig(join(o.installDir, 'kubeconfig'));
    expect(kc.server).toBe('https://10.96.0.1:443');
    expect(kc.ca).toContain('BEGIN CERTIFICATE');
    expect(kc.token()).toBe('tok-1');
    expect(statSync(join(o.installDir, 'token')).mode & 0o777).toBe(0o600);
    expect(installOnce(o, wrapper).changed).toEqual([]);
  });

  it('follows token rotation', () => {
    installOnce(o, wrapper);
    writeFileSync(join(o.serviceAccountDir, 'token'), 'tok-2');
    expect(installOnce(o, wrapper).changed).toEqual([join(o.installDir, 'kubeconfig')]);
    expect(loadKubeconfig(join(o.installDir, 'kubeconfig')).token()).toBe('tok-2');
  });

  it('the installed plugin runs on the copied node and libraries: VERSION, and ADD of a non-Kubernetes container', () => {
    installOnce(o, wrapper);
    const plugin = join(o.cniBinDir, 'weft-cni');
    expect(readFileSync(plugin, 'utf8')).toMatch(/^#!\/bin\/sh\n/);
    const run = (env: Record<string, string>, stdin: string) => spawnSync(plugin, [], { input: stdin, encoding: 'utf8', timeout: 60_000, env: { PATH: '/usr/bin:/bin', ...env } });
    const v = run({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }));
    expect(v.status, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ cniVersion: '1.0.0', supportedVersions: expect.arrayContaining(['1.0.0']) });
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.1.0.2/24' }] };
    const conf = { ...(JSON.parse(readFileSync(join(o.cniConfDir, '10-calico.conflist'), 'utf8')) as typeof CALICO).plugins.at(-1), cniVersion: '1.0.0', name: 'k8s-pod-network', prevResult: prev };
    const add = run({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'x', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: o.cniBinDir }, JSON.stringify(conf));
    expect(add.status, add.stderr).toBe(0);
    expect(JSON.parse(add.stdout)).toEqual(prev);
    // The runtime directory holds the loader and libraries it runs with, when node is dynamic.
    const rt = readdirSync(o.installDir).filter((e) => e.startsWith('rt-'));
    expect(rt).toHaveLength(1);
    expect(existsSync(join(o.installDir, rt[0]!, 'app', 'node_modules', 'tsx', 'package.json'))).toBe(true);
  });

  it('installing the same runtime again reuses it', () => {
    const again = installRuntime(o.installDir, o.hostInstallDir);
    expect(again.wrapper).toBe(wrapper);
  });

  it('uninstall takes weft out of the chain, then removes the plugin', () => {
    installOnce(o, wrapper);
    const removed = uninstall(o);
    expect(removed[0]).toBe(join(o.cniConfDir, '10-calico.conflist'));
    expect(JSON.parse(readFileSync(join(o.cniConfDir, '10-calico.conflist'), 'utf8'))).toEqual(CALICO);
    expect(existsSync(join(o.cniBinDir, 'weft-cni'))).toBe(false);
    expect(uninstall(o)).toEqual([]);
  });

  it('stopping keeps the plugin chained across an agent restart or rollout, and takes it out only when the DaemonSet is deleted', async () => {
    const api = await FakeApiServer.start();
    api.serve({ kind: 'DaemonSet', apiVersion: 'apps/v1', plural: 'daemonsets' });
    writeFileSync(join(o.serviceAccountDir, 'namespace'), 'istio-system');
    const ds = { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'weft-agent', namespace: 'istio-system' }, spec: {} };
    const on = { ...o, kubeServer: api.url };
    const chained = () => (JSON.parse(readFileSync(join(o.cniConfDir, '10-calico.conflist'), 'utf8')) as typeof CALICO).plugins.some((p) => p.type === 'weft-cni');
    try {
      installOnce(on, wrapper);
      api.apply(ds);
      // A restart or rollout: the DaemonSet stays. Pods that should be captured keep needing the plugin.
      expect(await stopInstaller(on)).toMatchObject({ uninstalled: false, changed: [], why: expect.stringMatching(/stays/) });
      expect(chained()).toBe(true);
      expect(existsSync(join(o.cniBinDir, 'weft-cni'))).toBe(true);
      expect(existsSync(join(o.installDir, 'kubeconfig'))).toBe(true);
      expect(api.requests.at(-1)).toMatchObject({ method: 'GET', path: '/apis/apps/v1/namespaces/istio-system/daemonsets/weft-agent', authorization: 'Bearer tok-2' });

      // The API cannot be asked: in doubt the plugin stays (fail closed).
      api.fault = () => 500;
      expect(await stopInstaller(on)).toMatchObject({ uninstalled: false, why: expect.stringMatching(/cannot tell/) });
      expect(chained()).toBe(true);
      api.fault = undefined;

      // `kubectl delete` of the DaemonSet: a deletion timestamp, then gone.
      api.apply({ ...ds, metadata: { ...ds.metadata, deletionTimestamp: new Date().toISOString() } });
      const r = await stopInstaller(on);
      expect(r).toMatchObject({ uninstalled: true, why: expect.stringMatching(/being deleted/) });
      expect(r.changed).toContain(join(o.cniConfDir, '10-calico.conflist'));
      expect(chained()).toBe(false);
      expect(existsSync(join(o.cniBinDir, 'weft-cni'))).toBe(false);

      installOnce(on, wrapper);
      api.remove('DaemonSet', 'istio-system', 'weft-agent');
      expect(await stopInstaller(on)).toMatchObject({ uninstalled: true, why: expect.stringMatching(/gone/) });
      expect(chained()).toBe(false);
    } finally {
      await api.close();
    }
  });

  it('the API server comes from the pod environment', () => {
    expect(kubeServerFromEnv({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' })).toBe('https://10.96.0.1:443');
    expect(kubeServerFromEnv({ KUBERNETES_SERVICE_HOST: 'fd00::1' })).toBe('https://[fd00::1]:443');
    expect(() => kubeServerFromEnv({})).toThrow(/KUBERNETES_SERVICE_HOST/);
  });
});
