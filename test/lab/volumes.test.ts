import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Pod } from '../../src/kube/objects.ts';
import { containerMounts, mountArgv, prepareVolumes } from '../../src/lab/volumes.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'weft-vol-'));
  dirs.push(d);
  return d;
};

const pod = (volumes: unknown[], mounts: unknown[]): Pod =>
  ({
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop' },
    spec: { serviceAccountName: 'teller', volumes, containers: [{ name: 'c', image: 'weft/sleep', volumeMounts: mounts }] },
  }) as Pod;

const sources = {
  token: (ns: string, sa: string, aud: string | undefined) => `token-for-${ns}/${sa}/${aud}`,
  configMap: (ns: string, name: string) => (name === 'root' ? { 'root-cert.pem': `root of ${ns}` } : undefined),
};

describe('lab pod volumes', () => {
  it('fills projected tokens, configMaps and emptyDirs, and binds them where the container asks, /var/run included', () => {
    const root = tmp();
    const p = pod(
      [
        { name: 'tok', projected: { sources: [{ serviceAccountToken: { audience: 'istio-ca', path: 'istio-token' } }] } },
        { name: 'ca', configMap: { name: 'root' } },
        { name: 'scratch', emptyDir: {} },
      ],
      [
        { name: 'tok', mountPath: '/var/run/secrets/tokens', readOnly: true },
        { name: 'ca', mountPath: '/var/run/secrets/istio' },
      ],
    );
    const vols = prepareVolumes(p, root, sources);
    expect(readFileSync(join(vols.get('tok')!, 'istio-token'), 'utf8')).toBe('token-for-shop/teller/istio-ca');
    expect(readFileSync(join(vols.get('ca')!, 'root-cert.pem'), 'utf8')).toBe('root of shop');
    expect(statSync(vols.get('scratch')!).isDirectory()).toBe(true);
    const mounts = containerMounts(p.spec.containers[0]!, vols);
    expect(mounts.map((m) => m.target)).toEqual(['/run/secrets/tokens', '/run/secrets/istio']);
    // In a private mount namespace (as `ip netns exec` gives a container), the files are where asked, read-only when asked.
    const argv = mountArgv(mounts, join(root, '.run'), ['sh', '-c', 'cat /var/run/secrets/tokens/istio-token /run/secrets/istio/root-cert.pem; touch /run/secrets/tokens/x 2>/dev/null && echo writable || echo read-only']);
    const r = spawnSync('unshare', ['-m', '--propagation', 'slave', ...argv], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('token-for-shop/teller/istio-caroot of shopread-only\n');
  });

  it('leaves out a mount that would hide where the container program lives (a checkout under /tmp, an emptyDir at /tmp), and says so', () => {
    const root = tmp();
    const target = tmp();
    writeFileSync(join(target, 'prog'), 'still here');
    const vols = prepareVolumes(pod([{ name: 'scratch', emptyDir: {} }], []), root, sources);
    const argv = mountArgv([{ source: vols.get('scratch')!, target, readOnly: false }], join(root, '.run'), ['cat', join(target, 'prog')], [join(target, 'prog')]);
    const r = spawnSync('unshare', ['-m', '--propagation', 'slave', ...argv], { encoding: 'utf8' });
    expect(r.stdout).toBe('still here');
    expect(r.stderr).toBe(`weft: volume at ${target} not mounted: it would hide ${join(target, 'prog')}, which this lab runs from\n`);
  });

  it('refuses a missing ConfigMap, a key it lacks and a path that leaves the volume, naming the volume', () => {
    expect(() => prepareVolumes(pod([{ name: 'ca', configMap: { name: 'nope' } }], []), tmp(), sources)).toThrow('spec.volumes[ca].configMap: configmap "nope" not found in namespace "shop"');
    expect(() => prepareVolumes(pod([{ name: 'ca', configMap: { name: 'root', items: [{ key: 'x', path: 'x' }] } }], []), tmp(), sources)).toThrow('has no key "x"');
    expect(() => prepareVolumes(pod([{ name: 'ca', configMap: { name: 'root', items: [{ key: 'root-cert.pem', path: '../../etc/x' }] } }], []), tmp(), sources)).toThrow('must stay inside its volume');
    expect(prepareVolumes(pod([{ name: 'ca', configMap: { name: 'nope', optional: true } }], []), tmp(), sources).size).toBe(1);
  });
});
