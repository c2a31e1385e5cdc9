// Finding running pods' sandboxes in /proc (the agent's reconcile at start), on a /proc laid out
// by the test: which cgroup paths name a pod, and which processes must not be taken.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { findPodSandboxes, KubePods, podUidOfCgroup, REDIRECTION_ANNOTATION } from '../../../src/agent/inpod/kube.ts';
import { loadKubeconfig } from '../../../src/kube/client.ts';
import { FakeApiServer } from '../../control/config/fake-apiserver.ts';

const A = '0f3c2a1e-7b6d-4c5e-9a8b-1234567890ab';
const B = '11111111-2222-4333-8444-555555555555';
const C = '99999999-2222-4333-8444-555555555555';

describe('pod sandboxes from /proc', () => {
  let proc: string;
  const task = (pid: number, cgroup: string, netns: string) => {
    mkdirSync(join(proc, String(pid), 'ns'), { recursive: true });
    writeFileSync(join(proc, String(pid), 'cgroup'), `0::${cgroup}\n`);
    symlinkSync(netns, join(proc, String(pid), 'ns', 'net')); // readlink gives net:[inode] on a real /proc
  };
  beforeEach(() => {
    proc = mkdtempSync(join(tmpdir(), 'weft-proc-'));
    task(1, '/init.scope', 'net:[4026531840]');
  });
  afterEach(() => rmSync(proc, { recursive: true, force: true }));

  it('reads the pod UID of both kubelet cgroup drivers', () => {
    expect(podUidOfCgroup(`/kubepods/burstable/pod${A}/cri-containerd-abc`)).toBe(A);
    expect(podUidOfCgroup(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${A.replace(/-/g, '_')}.slice/cri-containerd-1.scope`)).toBe(A);
    expect(podUidOfCgroup('/system.slice/containerd.service')).toBeUndefined();
    expect(podUidOfCgroup('/kubepods/podnot-a-uid')).toBeUndefined();
  });

  it("takes a pod's process: its netns and the pod's cgroup; not other pods, the host's netns, or paths outside the cgroup namespace", () => {
    task(100, '/system.slice/containerd.service', 'net:[4026531840]');
    task(200, `/kubepods/burstable/pod${A}/cri-containerd-app`, 'net:[4026532001]');
    task(201, `/kubepods/burstable/pod${A}/cri-containerd-side`, 'net:[4026532001]');
    task(300, `/kubepods/pod${B}/cri-containerd-x`, 'net:[4026531840]'); // host network: never captured
    task(400, `/../../kubepods/pod${C}/cri-containerd-y`, 'net:[4026532002]'); // outside our cgroup namespace
    writeFileSync(join(proc, 'self'), ''); // not a PID
    const found = findPodSandboxes(new Set([A, B, C]), { proc, cgroupRoot: '/sys/fs/cgroup' });
    expect([...found.keys()]).toEqual([A]);
    expect(found.get(A)).toEqual({ netns: join(proc, '200', 'ns', 'net'), cgroup: `/sys/fs/cgroup/kubepods/burstable/pod${A}` });
    expect(findPodSandboxes(new Set(), { proc })).toEqual(new Map());
  });
});

describe('the redirection annotation', () => {
  it('is set and removed on the pod with the uid the agent enrolled, never on a pod that replaced it', async () => {
    const api = await FakeApiServer.start();
    const dir = mkdtempSync(join(tmpdir(), 'weft-annotate-'));
    try {
      api.serve({ kind: 'Pod', apiVersion: 'v1', plural: 'pods' });
      const web = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-0', namespace: 'shop', annotations: { keep: 'me' } }, spec: {} };
      const old = api.apply(web).metadata.uid as string;
      const kube = new KubePods(loadKubeconfig(api.writeKubeconfig(dir)), 'node-1', pino({ level: 'silent' }));
      const annotations = () => api.get('Pod', 'shop', 'web-0')?.metadata.annotations as Record<string, string>;
      const info = { uid: old, name: 'web-0', namespace: 'shop' };
      await kube.annotate(info, true);
      expect(annotations()).toEqual({ keep: 'me', [REDIRECTION_ANNOTATION]: 'enabled' });
      expect(api.requests.at(-1)).toMatchObject({ method: 'PATCH', path: '/api/v1/namespaces/shop/pods/web-0/status' });
      await kube.annotate(info, false);
      expect(annotations()).toEqual({ keep: 'me' });

      // A StatefulSet pod replaced under the same name while the agent held the old one.
      api.remove('Pod', 'shop', 'web-0');
      const fresh = api.apply({ ...web, metadata: { ...web.metadata, annotations: { [REDIRECTION_ANNOTATION]: 'enabled' } } }).metadata.uid as string;
      expect(fresh).not.toBe(old);
      await kube.released({ ...info, serviceAccount: 'sa', ips: [], netns: '/x', cgroup: '/y' }); // the old pod's release
      expect(annotations()).toEqual({ [REDIRECTION_ANNOTATION]: 'enabled' }); // the new pod's mark stays
      await expect(kube.annotate(info, true)).rejects.toThrow(/web-0: cannot set annotation .*Precondition failed/);
      api.remove('Pod', 'shop', 'web-0');
      await expect(kube.annotate(info, true)).rejects.toThrow(/does not exist/);
      await kube.annotate(info, false); // a deleted pod needs no unmarking
    } finally {
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
