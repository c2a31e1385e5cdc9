import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { installInto, removeFromDir } from '../../src/cni/conflist.ts';

const CALICO = {
  name: 'k8s-pod-network',
  cniVersion: '1.0.0',
  plugins: [
    { type: 'calico', datastore_type: 'kubernetes', ipam: { type: 'calico-ipam' } },
    { type: 'portmap', snat: true, capabilities: { portMappings: true } },
  ],
};
const ENTRY = { type: 'weft-cni', kubeconfig: '/var/lib/weft/cni/kubeconfig', agentSocket: '/var/run/weft/agent.sock', excludeNamespaces: ['kube-system'] };

describe('chaining weft-cni into the CNI configuration', () => {
  let dir: string;
  const read = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as typeof CALICO;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'weft-netd-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('appends weft last in the first conflist, once, and leaves the rest alone', () => {
    writeFileSync(join(dir, '10-calico.conflist'), JSON.stringify(CALICO), { mode: 0o600 });
    writeFileSync(join(dir, '99-loopback.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'lo', type: 'loopback' }));
    writeFileSync(join(dir, 'calico-kubeconfig'), 'not a CNI file');
    expect(installInto(dir, ENTRY)).toEqual({ file: join(dir, '10-calico.conflist'), changed: true });
    const c = read('10-calico.conflist');
    expect(c).toEqual({ ...CALICO, plugins: [...CALICO.plugins, ENTRY] });
    expect(statSync(join(dir, '10-calico.conflist')).mode & 0o777).toBe(0o600); // mode kept

    const before = readFileSync(join(dir, '10-calico.conflist'), 'utf8');
    const mtime = statSync(join(dir, '10-calico.conflist')).mtimeMs;
    expect(installInto(dir, ENTRY)).toEqual({ file: join(dir, '10-calico.conflist'), changed: false });
    expect(readFileSync(join(dir, '10-calico.conflist'), 'utf8')).toBe(before);
    expect(statSync(join(dir, '10-calico.conflist')).mtimeMs).toBe(mtime);
    expect(readdirSync(dir).sort()).toEqual(['10-calico.conflist', '99-loopback.conf', 'calico-kubeconfig']); // no temporary files
  });

  it('replaces an outdated weft entry and moves it back to the end', () => {
    writeFileSync(join(dir, '10-calico.conflist'), JSON.stringify({ ...CALICO, plugins: [CALICO.plugins[0], { type: 'weft-cni', agentSocket: '/old' }, CALICO.plugins[1]] }));
    expect(installInto(dir, ENTRY).changed).toBe(true);
    expect(read('10-calico.conflist').plugins).toEqual([...CALICO.plugins, ENTRY]);
  });

  it('turns a single-plugin .conf into a .conflist', () => {
    writeFileSync(join(dir, '10-flannel.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'cbr0', type: 'flannel', delegate: { isDefaultGateway: true } }));
    expect(installInto(dir, ENTRY)).toEqual({ file: join(dir, '10-flannel.conflist'), changed: true });
    expect(readdirSync(dir)).toEqual(['10-flannel.conflist']);
    expect(read('10-flannel.conflist')).toEqual({ cniVersion: '0.3.1', name: 'cbr0', plugins: [{ type: 'flannel', delegate: { isDefaultGateway: true } }, ENTRY] });
    expect(installInto(dir, ENTRY).changed).toBe(false);
  });

  it('waits for the network plugin (no file yet), and follows a new primary file', () => {
    expect(installInto(dir, ENTRY)).toEqual({ file: undefined, changed: false });
    writeFileSync(join(dir, '20-calico.conflist'), JSON.stringify(CALICO));
    installInto(dir, ENTRY);
    writeFileSync(join(dir, '05-cilium.conflist'), JSON.stringify({ ...CALICO, name: 'cilium', plugins: [{ type: 'cilium-cni' }] }));
    expect(installInto(dir, ENTRY)).toEqual({ file: join(dir, '05-cilium.conflist'), changed: true });
    expect(read('05-cilium.conflist').plugins.at(-1)).toEqual(ENTRY);
    expect(read('20-calico.conflist')).toEqual(CALICO); // taken out of the former primary
  });

  it('re-chains after the network plugin rewrote its file', () => {
    writeFileSync(join(dir, '10-calico.conflist'), JSON.stringify(CALICO));
    installInto(dir, ENTRY);
    writeFileSync(join(dir, '10-calico.conflist'), JSON.stringify(CALICO));
    expect(installInto(dir, ENTRY).changed).toBe(true);
    expect(read('10-calico.conflist').plugins.at(-1)).toEqual(ENTRY);
  });

  it('removal takes weft out of every file and keeps everything else', () => {
    writeFileSync(join(dir, '10-calico.conflist'), JSON.stringify(CALICO));
    installInto(dir, ENTRY);
    expect(removeFromDir(dir)).toEqual(['10-calico.conflist']);
    expect(read('10-calico.conflist')).toEqual(CALICO);
    expect(removeFromDir(dir)).toEqual([]);
    expect(removeFromDir(join(dir, 'missing'))).toEqual([]);
  });

  it('names the file when the primary configuration is not JSON', () => {
    writeFileSync(join(dir, '10-broken.conflist'), '{');
    expect(() => installInto(dir, ENTRY)).toThrow(/10-broken\.conflist/);
  });
});
