// Feature probe, object loading and load errors, generated constants, codecs.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bpfObjectPath, native } from '../../src/bpf/addon.ts';
import { repoRoot } from '../../src/util/paths.ts';
import { assertKernelReady, isBpfError, probeKernel, WEFT } from '../../src/bpf/index.ts';
import { exclKey, origDst, peerKey } from '../../src/bpf/maps.ts';
import { Fixture } from './env.ts';

const fx = new Fixture();
afterAll(() => fx.cleanup());

describe('kernel feature probe', () => {
  it('reports every feature weft needs as present', () => {
    const report = probeKernel();
    expect(report.missing).toEqual([]);
    expect(report.cgroup2).toBeTruthy();
    expect(report.helpers['sk_lookup/sk_assign']).toBe(true);
    expect(() => assertKernelReady(report)).not.toThrow();
  });

  it('names missing features in the error', () => {
    const report = { ...probeKernel(), missing: ['program type sk_lookup'] };
    expect(() => assertKernelReady(report)).toThrow(/sk_lookup/);
  });
});

describe('loading objects', () => {
  const expected: Record<string, string> = {
    connect4: 'cgroup_inet4_connect',
    connect6: 'cgroup_inet6_connect',
    sockops: 'cgroup_sock_ops',
    getpeername4: 'cgroup_inet4_getpeername',
    getpeername6: 'cgroup_inet6_getpeername',
    sk_lookup: 'sk_lookup',
  };

  it('loads each object with its program and pinned-by-name maps', () => {
    const pinRoot = fx.pinRoot();
    fs.mkdirSync(pinRoot);
    const built = fs.readdirSync(path.join(repoRoot, 'build', 'bpf')).filter((f) => f.endsWith('.bpf.o'));
    expect(built.sort()).toEqual(Object.keys(expected).map((n) => `${n}.bpf.o`).sort());
    for (const [name, attach] of Object.entries(expected)) {
      const obj = native().loadObject(bpfObjectPath(name), { pinRoot });
      try {
        const progs = Object.values(obj.programs);
        expect(progs).toHaveLength(1);
        expect(progs[0]!.attachTypeName).toBe(attach);
        for (const [n, m] of Object.entries(obj.maps)) expect(m.pinPath).toBe(path.join(pinRoot, n));
      } finally {
        [...Object.values(obj.programs), ...Object.values(obj.maps)].forEach((x) => fs.closeSync(x.fd));
      }
    }
    // All cgroup objects share the node-wide maps: each name pinned once.
    expect(fs.readdirSync(pinRoot).sort()).toEqual(
      [WEFT.MAP_ORIG_SK, WEFT.MAP_ORIG_DST, WEFT.MAP_OUT_EXCL, WEFT.MAP_OUT_COUNT, WEFT.MAP_IN_SOCKS, WEFT.MAP_IN_EXCL, WEFT.MAP_IN_COUNT].sort(),
    );
    // Kernel struct sizes match the TypeScript codecs.
    const info = (n: string) => {
      const fd = native().objGet(path.join(pinRoot, n));
      try {
        return native().mapInfo(fd);
      } finally {
        fs.closeSync(fd);
      }
    };
    expect([info(WEFT.MAP_ORIG_DST).keySize, info(WEFT.MAP_ORIG_DST).valueSize]).toEqual([peerKey.size, origDst.size]);
    expect(info(WEFT.MAP_OUT_EXCL).keySize).toBe(exclKey.size);
    expect(info(WEFT.MAP_ORIG_SK).valueSize).toBe(origDst.size);
  });

  it('a verifier rejection carries errno, code and the verifier log', () => {
    let err: unknown;
    try {
      native().loadObject(path.join(repoRoot, 'build', 'bpf', 'testdata', 'bad_verifier.bpf.o'));
    } catch (e) {
      err = e;
    }
    expect(isBpfError(err)).toBe(true);
    if (!isBpfError(err)) return;
    expect([13, 22]).toContain(err.errno);
    expect(['EACCES', 'EINVAL']).toContain(err.code);
    expect(err.verifierLog).toMatch(/BEGIN PROG LOAD LOG/);
    expect(err.verifierLog).toMatch(/invalid read from stack|uninit|invalid/i);
    expect(err.message).toMatch(/verifierLog/);
  });

  it('a missing object says to build', () => {
    expect(() => native().loadObject('/nonexistent/x.bpf.o')).toThrow(/run make build/);
    try {
      native().objGet('/sys/fs/bpf/weft-bt-does-not-exist');
    } catch (e) {
      expect(isBpfError(e) && e.code === 'ENOENT' && e.errno === 2).toBe(true);
    }
  });
});

describe('shared constants and codecs', () => {
  it('src/bpf/consts.ts is generated from bpf/include/weft_consts.h and current', () => {
    expect(() => execFileSync('node', [path.join(repoRoot, 'bpf', 'gen-consts.mjs'), '--check'], { stdio: 'pipe' })).not.toThrow();
    expect(WEFT.PORT_OUTBOUND).toBe(15001);
    expect(WEFT.PORT_INBOUND).toBe(15006);
    expect(WEFT.PORT_HBONE).toBe(15008);
  });

  it('round-trips IPv4, IPv6 and v4-mapped addresses', () => {
    for (const address of ['10.1.2.3', 'fd00::1', '2001:db8:0:1::ab', '::1', 'fe80::1:0:0:2']) {
      const k = peerKey.decode(peerKey.encode({ netnsCookie: 42n, client: { address, port: 4242 } }));
      expect(k).toMatchObject({ netnsCookie: 42n, client: { address, port: 4242 } });
    }
    expect(peerKey.decode(peerKey.encode({ netnsCookie: 1n, client: { address: '::ffff:10.0.0.9', port: 1 } })).client.address).toBe('10.0.0.9');
  });
});
