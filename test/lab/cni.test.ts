import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { validatePodInfo, type PodInfo } from '../../src/api/enrollment.ts';
import { runPlugin } from '../../src/cni/plugin.ts';
import type { Pod } from '../../src/kube/objects.ts';
import { LabCni, type CniPod, type EnrollmentAgent } from '../../src/lab/cni.ts';
import { ObjectStore } from '../../src/lab/store.ts';
import { FakeKubeApi, RecordingAgent, scratch } from '../cni/servers.ts';

const UID = '0b5e0a3c-0000-4000-8000-00000000cafe';

describe("the lab's CNI step", () => {
  let s: ReturnType<typeof scratch>;
  let agent: RecordingAgent;
  let store: ObjectStore;
  let lab: LabCni;
  let mirrored: number;
  let logs: string[];
  const agents = () => new Map<string, EnrollmentAgent>([['node-0', { socket: s.socket, running: true, waitReady: async () => {} }]]);

  const pod = (labels: Record<string, string> = {}, annotations?: Record<string, string>): Pod => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'reviews-1', namespace: 'bookinfo', uid: UID, labels, annotations },
    spec: { serviceAccountName: 'reviews', containers: [{ name: 'c', image: 'weft/echo' }], nodeName: 'node-0' },
  });
  const rec = (p: Pod): CniPod => ({ key: 'bookinfo/reviews-1', pod: p, node: { name: 'node-0' }, ip: '10.244.0.7', ip6: 'fd00:10:244::7', netns: 'lab.bookinfo.reviews-1', cgroup: '/sys/fs/cgroup/weft/lab/pods/bookinfo.reviews-1', enrolled: false });
  const namespace = (labels: Record<string, string>) => store.apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bookinfo', labels } }], () => true);

  beforeEach(async () => {
    s = scratch('http://127.0.0.1:1');
    agent = await new RecordingAgent(s.socket).start();
    store = new ObjectStore();
    store.seed();
    mirrored = 0;
    logs = [];
    lab = new LabCni(agents(), store, { beforeEnroll: () => mirrored++, log: (level, msg) => logs.push(`${level} ${msg}`) });
  });
  afterEach(() => {
    agent.close();
    s.cleanup();
  });

  it('enrolls an ambient pod at ADD with its sandbox, after the control plane was told of it', async () => {
    namespace({ 'istio.io/dataplane-mode': 'ambient' });
    const r = rec(pod({}, { 'weft.dev/capture': 'iptables' }));
    await lab.add(r);
    expect(mirrored).toBe(1);
    expect(r.enrolled).toBe(true);
    expect(r.error).toBeUndefined();
    expect(agent.requests.map((q) => `${q.method} ${q.url}`)).toEqual([`PUT /v1/pods/${UID}`]);
    expect(validatePodInfo(JSON.parse(agent.requests[0]!.body))).toEqual({
      uid: UID,
      name: 'reviews-1',
      namespace: 'bookinfo',
      serviceAccount: 'reviews',
      ips: ['10.244.0.7', 'fd00:10:244::7'],
      netns: '/run/netns/lab.bookinfo.reviews-1',
      cgroup: '/sys/fs/cgroup/weft/lab/pods/bookinfo.reviews-1',
      capture: 'iptables',
    });
  });

  it('passes other pods through without calling the agent; a lab without a mesh has no plugin', async () => {
    namespace({ 'istio.io/dataplane-mode': 'ambient' });
    await lab.add(rec(pod({ 'istio.io/dataplane-mode': 'none' })));
    const noMesh = new LabCni(undefined, store, { beforeEnroll: () => mirrored++, log: () => undefined });
    expect(noMesh.decide(pod())).toEqual({ enroll: false, why: 'no mesh' });
    await noMesh.add(rec(pod()));
    expect(mirrored).toBe(0);
    expect(agent.requests).toEqual([]);
  });

  it('follows label changes on a running pod and its namespace, and releases at DEL', async () => {
    namespace({});
    const r = rec(pod());
    await lab.add(r);
    expect(lab.outOfDate(r)).toBe(false);
    namespace({ 'istio.io/dataplane-mode': 'ambient' });
    expect(lab.outOfDate(r)).toBe(true);
    await lab.sync(r);
    expect(r.enrolled).toBe(true);
    r.pod = pod({ 'istio.io/dataplane-mode': 'none' });
    expect(lab.outOfDate(r)).toBe(true);
    await lab.sync(r);
    expect(r.enrolled).toBe(false);
    await lab.del(r); // not enrolled: nothing to release
    r.pod = pod();
    await lab.sync(r);
    await lab.del(r);
    expect(r.enrolled).toBe(false);
    expect(agent.requests.map((q) => `${q.method} ${q.url}`)).toEqual([`PUT /v1/pods/${UID}`, `DELETE /v1/pods/${UID}`, `PUT /v1/pods/${UID}`, `DELETE /v1/pods/${UID}`]);
    expect(logs).toContain('info pod bookinfo/reviews-1 released on node-0');
  });

  it('fails closed: a pod the agent does not capture gets an error and must not start', async () => {
    namespace({ 'istio.io/dataplane-mode': 'ambient' });
    agent.refuse = [500, 'cannot attach capture to cgroup'];
    const r = rec(pod());
    await lab.add(r);
    expect(r).toMatchObject({ enrolled: false, error: 'enrollment failed: agent: cannot attach capture to cgroup' });
  });

  describe('tells the agent what weft-cni would for the same pod', () => {
    let api: FakeKubeApi;
    beforeAll(async () => {
      api = await new FakeKubeApi().start();
    });
    afterAll(() => api.close());

    it.each([
      ['ambient namespace', { 'istio.io/dataplane-mode': 'ambient' }, {}, undefined, 1],
      ['ambient pod', {}, { 'istio.io/dataplane-mode': 'ambient' }, { 'weft.dev/capture': 'ebpf' }, 1],
      ['opted out', { 'istio.io/dataplane-mode': 'ambient' }, { 'istio.io/dataplane-mode': 'none' }, undefined, 0],
      ['plain', {}, { app: 'reviews' }, { 'weft.dev/capture': 'iptables' }, 0],
    ])('%s', async (_, nsLabels, podLabels, annotations, enrolls) => {
      const p = pod(podLabels, annotations);
      // On a cluster: the API serves the pod and its namespace; the runtime made the sandbox.
      const k = scratch(api.url);
      const cniAgent = await new RecordingAgent(k.socket).start();
      try {
        api.namespace('bookinfo', nsLabels);
        api.routes.set('/api/v1/namespaces/bookinfo/pods/reviews-1', [200, p]);
        const r = rec(p);
        const conf = { cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'weft-cni', kubeconfig: k.kubeconfig, agentSocket: k.socket, cgroupRoot: k.cgroupRoot, prevResult: { cniVersion: '1.0.0', ips: [{ address: `${r.ip}/24` }, { address: `${r.ip6}/64` }] } };
        const netns = `/run/netns/${r.netns}`;
        mkdirSync(join(k.cgroupRoot, 'kubepods', `pod${UID}`), { recursive: true });
        const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=bookinfo;K8S_POD_NAME=reviews-1;K8S_POD_UID=${UID}` };
        expect((await runPlugin(env, JSON.stringify(conf))).exitCode).toBe(0);
        // In the lab: the store holds them; the lab's kubelet made the sandbox.
        namespace(nsLabels);
        await lab.add(r);
        // The cgroup is found differently (the kubelet's tree on a node, the lab's own tree here).
        const sent = (a: RecordingAgent) => a.requests.map((q) => ({ ...(JSON.parse(q.body) as PodInfo), cgroup: undefined }));
        expect(sent(agent)).toHaveLength(enrolls);
        expect(sent(agent)).toEqual(sent(cniAgent));
      } finally {
        cniAgent.close();
        k.cleanup();
      }
    });
  });
});
