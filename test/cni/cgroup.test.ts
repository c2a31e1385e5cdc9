import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cgroup2Root, resolvePodCgroup } from '../../src/cni/cgroup.ts';

const UID = '0f3c2a1e-7b6d-4c5e-9a8b-1234567890ab';
const U = UID.replace(/-/g, '_');

describe('finding a pod cgroup from its UID', () => {
  let root: string;
  const make = (...parts: string[]) => {
    const p = join(root, ...parts);
    mkdirSync(p, { recursive: true });
    return p;
  };
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'weft-cgroup-'));
    make('system.slice', 'containerd.service');
    make('user.slice', 'user-0.slice');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it.each([
    ['cgroupfs, Guaranteed', ['kubepods', `pod${UID}`]],
    ['cgroupfs, Burstable', ['kubepods', 'burstable', `pod${UID}`]],
    ['cgroupfs, BestEffort, under a --cgroup-root', ['kubelet', 'kubepods', 'besteffort', `pod${UID}`]],
    ['systemd, Guaranteed', ['kubepods.slice', `kubepods-pod${U}.slice`]],
    ['systemd, BestEffort', ['kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${U}.slice`]],
    ['systemd, kind-style kubelet.slice', ['kubelet.slice', 'kubelet-kubepods.slice', 'kubelet-kubepods-burstable.slice', `kubelet-kubepods-burstable-pod${U}.slice`]],
  ])('%s', (_label, parts) => {
    make('kubepods', 'burstable', 'podsomeone-else');
    const want = make(...parts);
    make(...parts, 'cri-containerd-abc.scope'); // a container inside: the pod's dir is still the answer
    expect(resolvePodCgroup({ uid: UID, root })).toBe(want);
  });

  it('follows /proc/<pid>/cgroup when the netns is a process path', () => {
    const pod = make('kubepods.slice', 'kubepods-burstable.slice', `kubepods-burstable-pod${U}.slice`);
    make('kubepods.slice', 'kubepods-burstable.slice', `kubepods-burstable-pod${U}.slice`, 'cri-containerd-1.scope');
    const proc = join(root, 'proc');
    mkdirSync(join(proc, '4242'), { recursive: true });
    writeFileSync(join(proc, '4242', 'cgroup'), `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U}.slice/cri-containerd-1.scope\n`);
    expect(resolvePodCgroup({ uid: UID, root, netns: '/proc/4242/ns/net', proc })).toBe(pod);
  });

  it('says where it looked and what to check when the pod cgroup is not there', () => {
    expect(() => resolvePodCgroup({ uid: UID, root })).toThrow(new RegExp(`cgroup of pod ${UID} not found under .*pod${UID}.*-pod${U}\\.slice.*no kubepods tree.*cgroupRoot`));
  });

  it('finds the cgroup v2 mount in mountinfo', () => {
    const mi = join(root, 'mountinfo');
    writeFileSync(mi, ['25 1 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw', '26 1 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu'].join('\n'));
    expect(cgroup2Root(mi)).toBe('/sys/fs/cgroup/unified');
    writeFileSync(mi, '26 1 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n');
    expect(() => cgroup2Root(mi)).toThrow(/cgroup v2 is not mounted/);
  });
});
