import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { validatePodInfo } from '../../src/api/enrollment.ts';
import { runPlugin } from '../../src/cni/plugin.ts';
import { FakeKubeApi, RecordingAgent, scratch } from './servers.ts';

const UID = '6a1b2c3d-0000-4000-8000-123456789abc';
const PREV = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/cni-1234' }],
  ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

describe('weft-cni plugin', () => {
  let api: FakeKubeApi;
  let agent: RecordingAgent;
  let s: ReturnType<typeof scratch>;
  const conf = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'weft-cni', kubeconfig: s.kubeconfig, agentSocket: s.socket, excludeNamespaces: ['kube-system'], cgroupRoot: s.cgroupRoot, prevResult: PREV, ...extra });
  const env = (command: string, ns = 'bookinfo', name = 'reviews-1', uid = UID) => ({
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'c0ffee',
    CNI_NETNS: '/var/run/netns/cni-1234',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=${uid}`,
  });

  beforeAll(async () => {
    api = await new FakeKubeApi().start();
  });
  afterAll(() => api.close());
  beforeEach(async () => {
    s = scratch(api.url);
    agent = await new RecordingAgent(s.socket).start();
    api.routes.clear();
    api.requests.length = 0;
    mkdirSync(join(s.cgroupRoot, 'kubepods.slice', 'kubepods-burstable.slice', `kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice`), { recursive: true });
  });
  afterEach(() => {
    agent.close();
    s.cleanup();
  });

  it('ADD of a pod in an ambient namespace enrolls it with the agent, then passes prevResult through', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID, { app: 'reviews' });
    const out = await runPlugin(env('ADD'), conf());
    expect(out.exitCode, out.stdout).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(PREV);
    expect(agent.requests).toHaveLength(1);
    const req = agent.requests[0]!;
    expect(req.method).toBe('PUT');
    expect(req.url).toBe(`/v1/pods/${UID}`);
    const info = validatePodInfo(JSON.parse(req.body)); // the agent's own check of the request
    expect(info).toEqual({
      uid: UID,
      name: 'reviews-1',
      namespace: 'bookinfo',
      serviceAccount: 'reviews',
      ips: ['10.244.1.5'],
      netns: '/var/run/netns/cni-1234',
      cgroup: join(s.cgroupRoot, 'kubepods.slice', 'kubepods-burstable.slice', `kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice`),
    });
    // Labels read with the installer's token.
    expect(api.requests.map((r) => r.url).sort()).toEqual(['/api/v1/namespaces/bookinfo', '/api/v1/namespaces/bookinfo/pods/reviews-1']);
    expect(api.requests.every((r) => r.authorization === 'Bearer secret-token')).toBe(true);
  });

  it('the pod label decides over the namespace: ambient pod in a plain namespace, opted-out pod in an ambient one', async () => {
    api.namespace('bookinfo');
    api.pod('bookinfo', 'reviews-1', UID, { 'istio.io/dataplane-mode': 'ambient' });
    expect((await runPlugin(env('ADD'), conf())).exitCode).toBe(0);
    expect(agent.requests).toHaveLength(1);

    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID, { 'istio.io/dataplane-mode': 'none' });
    const out = await runPlugin(env('ADD'), conf());
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(PREV);
    expect(agent.requests).toHaveLength(1); // not called again
  });

  it('a pod outside the mesh is passed through without calling the agent; excluded namespaces cost no API call', async () => {
    api.namespace('default');
    api.pod('default', 'web', UID);
    const out = await runPlugin(env('ADD', 'default', 'web'), conf({ cniVersion: '0.4.0', prevResult: { ...PREV, cniVersion: '0.4.0' } }));
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({ ...PREV, cniVersion: '0.4.0' });
    expect(agent.requests).toEqual([]);

    api.requests.length = 0;
    const ks = await runPlugin(env('ADD', 'kube-system', 'coredns-1'), conf());
    expect(ks.exitCode).toBe(0);
    expect(api.requests).toEqual([]);
    expect(ks.log.join('\n')).toMatch(/excluded/);
  });

  it('a host-network pod in an ambient namespace is passed through: it has no netns of its own to capture', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID, {}, { hostNetwork: true });
    const out = await runPlugin(env('ADD'), conf());
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(PREV);
    expect(agent.requests).toEqual([]);
    expect(out.log.join('\n')).toMatch(/host network/);
  });

  it('the weft.dev/capture annotation picks the pod\'s capture mode, as in the lab', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    const path = '/api/v1/namespaces/bookinfo/pods/reviews-1';
    api.routes.set(path, [200, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'reviews-1', namespace: 'bookinfo', uid: UID, annotations: { 'weft.dev/capture': 'iptables' } }, spec: { containers: [{ name: 'c', image: 'x' }] } }]);
    expect((await runPlugin(env('ADD'), conf())).exitCode).toBe(0);
    expect(validatePodInfo(JSON.parse(agent.requests[0]!.body))).toMatchObject({ serviceAccount: 'default', capture: 'iptables' });
  });

  it('fails closed: an ambient pod whose enrollment the agent refuses does not get a result', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID);
    agent.refuse = [500, 'cannot attach capture to cgroup'];
    const out = await runPlugin(env('ADD'), conf());
    expect(out.exitCode).toBe(1);
    const err = JSON.parse(out.stdout) as { cniVersion: string; code: number; msg: string };
    expect(err).toMatchObject({ cniVersion: '1.0.0', code: 100 });
    expect(err.msg).toMatch(/bookinfo\/reviews-1 is ambient but the node agent did not capture it: agent: cannot attach capture/);
  });

  it('fails closed when no agent listens (try again later) and when the labels cannot be read', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID);
    agent.close();
    const down = await runPlugin(env('ADD'), conf({ agentSocket: join(s.dir, 'missing.sock') }));
    expect(down.exitCode).toBe(1);
    expect(JSON.parse(down.stdout)).toMatchObject({ code: 11, details: expect.stringMatching(/is the weft agent running/) });

    api.routes.set('/api/v1/namespaces/bookinfo', [403, { kind: 'Status', message: 'namespaces "bookinfo" is forbidden', code: 403 }]);
    const forbidden = await runPlugin(env('ADD'), conf());
    expect(JSON.parse(forbidden.stdout)).toMatchObject({ code: 101, msg: expect.stringMatching(/cannot read its labels: .*HTTP 403: namespaces "bookinfo" is forbidden/) });
  });

  it('while no agent answers (a restart or rollout), ambient pods wait retriably and the rest start', async () => {
    agent.close();
    const gone = conf({ agentSocket: join(s.dir, 'missing.sock') });
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID);
    const ambient = await runPlugin(env('ADD'), gone);
    expect(ambient.exitCode).toBe(1);
    expect(JSON.parse(ambient.stdout)).toMatchObject({ code: 11 }); // "try again later": the kubelet retries the sandbox
    api.namespace('default');
    api.pod('default', 'web', UID);
    const plain = await runPlugin(env('ADD', 'default', 'web'), gone);
    expect(plain.exitCode).toBe(0);
    expect(JSON.parse(plain.stdout)).toEqual(PREV);
    api.pod('bookinfo', 'reviews-2', UID, { 'istio.io/dataplane-mode': 'none' });
    expect((await runPlugin(env('ADD', 'bookinfo', 'reviews-2'), gone)).exitCode).toBe(0);
  });

  it('refuses a pod that was replaced under the same name, and ADD without prevResult', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', 'another-uid');
    expect(JSON.parse((await runPlugin(env('ADD'), conf())).stdout)).toMatchObject({ code: 3 });
    expect(JSON.parse((await runPlugin(env('ADD'), conf({ prevResult: undefined }))).stdout)).toMatchObject({ code: 7, msg: expect.stringMatching(/chained/) });
    expect(agent.requests).toEqual([]);
  });

  it('a pod whose cgroup cannot be found is refused with a clear reason', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID);
    const out = await runPlugin(env('ADD'), conf({ cgroupRoot: join(s.dir, 'empty') }));
    expect(JSON.parse(out.stdout)).toMatchObject({ code: 100, msg: expect.stringMatching(/cgroup of pod .* not found/) });
  });

  it('DEL releases the pod, and succeeds even when the agent is gone', async () => {
    const out = await runPlugin({ ...env('DEL'), CNI_NETNS: '' }, conf());
    expect(out).toMatchObject({ exitCode: 0, stdout: '' });
    expect(agent.requests.map((r) => `${r.method} ${r.url}`)).toEqual([`DELETE /v1/pods/${UID}`]);
    agent.close();
    expect((await runPlugin(env('DEL'), conf({ agentSocket: join(s.dir, 'missing.sock') }))).exitCode).toBe(0);
    expect(api.requests).toEqual([]); // DEL needs no labels
  });

  it('CHECK: an ambient pod must be enrolled; others pass', async () => {
    api.namespace('bookinfo', { 'istio.io/dataplane-mode': 'ambient' });
    api.pod('bookinfo', 'reviews-1', UID);
    expect(JSON.parse((await runPlugin(env('CHECK'), conf())).stdout)).toMatchObject({ code: 102 });
    await runPlugin(env('ADD'), conf());
    expect(await runPlugin(env('CHECK'), conf())).toMatchObject({ exitCode: 0, stdout: '' });
    expect(JSON.parse((await runPlugin(env('CHECK'), conf({ cniVersion: '0.3.1' }))).stdout)).toMatchObject({ code: 1 });
  });

  it('VERSION, and protocol errors with the codes the spec gives', async () => {
    const v = await runPlugin({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '1.0.0' }));
    expect(JSON.parse(v.stdout)).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    const unknown = await runPlugin({ CNI_COMMAND: 'FROB' }, conf());
    expect(JSON.parse(unknown.stdout)).toMatchObject({ code: 4, msg: 'unknown CNI_COMMAND: FROB' });
    const noNetns = await runPlugin({ ...env('ADD'), CNI_NETNS: '' }, conf());
    expect(JSON.parse(noNetns.stdout)).toMatchObject({ code: 4, msg: 'CNI_NETNS is required for ADD' });
    expect(JSON.parse((await runPlugin(env('ADD'), '{not json')).stdout)).toMatchObject({ code: 6 });
    expect(JSON.parse((await runPlugin(env('ADD'), conf({ cniVersion: '2.0.0' }))).stdout)).toMatchObject({ code: 1 });
    expect(JSON.parse((await runPlugin(env('ADD'), conf({ agentSocket: undefined }))).stdout)).toMatchObject({ code: 7, msg: expect.stringMatching(/agentSocket/) });
    expect(await runPlugin({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' }))).toMatchObject({ exitCode: 0, stdout: '' });
  });

  it('a non-Kubernetes invocation (no K8S_POD_* args) is passed through', async () => {
    const out = await runPlugin({ ...env('ADD'), CNI_ARGS: '' }, conf());
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(PREV);
    expect(api.requests).toEqual([]);
  });
});
