// The Kubernetes path end to end, with only the API server a double (the fake): `weft control
// --kubeconfig` and `weft agent --kubeconfig` as processes, real network namespaces, cgroups and
// eBPF capture, and the CNI plugin's own code for ADD and DEL.
//   - a pod that ran before the agent (never passed through the CNI plugin) is found in /proc and
//     enrolled when the agent starts, and annotated ambient.istio.io/redirection=enabled;
//   - CNI ADD of a pod in an ambient namespace returns only once the agent has captured it and the
//     annotation is on the pod (it fails, for the kubelet to retry, while the patch fails);
//   - the control plane then serves both with tunnel protocol HBONE, and the agent's outbound path
//     takes HBONE to them (to the pod on its node: the node-local path, which a plaintext plan
//     could not take, as the pods have no route to each other; to a pod elsewhere: <ip>:15008);
//   - an agent restart re-adopts both (one netns by path, one by /proc/PID with its start time) and
//     puts back an annotation that was lost meanwhile;
//   - CNI DEL releases the pod and removes its annotation.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentCall } from '../../../src/api/enrollment.ts';
import { REDIRECTION_ANNOTATION } from '../../../src/agent/inpod/kube.ts';
import { DeltaXdsClient } from '../../../src/agent/xds/delta-client.ts';
import { cgroup2Mount, ensureBpffs } from '../../../src/bpf/mounts.ts';
import { runPlugin } from '../../../src/cni/plugin.ts';
import { ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY } from '../../../src/control/ca/root-cert-configmap.ts';
import { NODE_NAME_EXTRA } from '../../../src/control/ca/token-review.ts';
import { KUBE_RESOURCES } from '../../../src/control/config/kube-api.ts';
import { waitFor } from '../../../src/util/sleep.ts';
import { FakeApiServer, type FakeObject } from '../../control/config/fake-apiserver.ts';
import { labName } from '../../e2e/helpers.ts';
import { freePort } from '../../util/ports.ts';

const BIN = new URL('../../../bin/weft.js', import.meta.url).pathname;
const SERVER_NAME = 'weft-control.istio-system.svc';
const AGENT_TOKEN = 'agent-token-node-1';
const IP = { a: '10.244.1.5', b: '10.244.1.6', far: '10.244.2.5' };

const sh = (...args: string[]) => {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
};

const pod = (name: string, node: string, ip: string, annotated = false): FakeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { app: name }, annotations: annotated ? { [REDIRECTION_ANNOTATION]: 'enabled' } : {} },
  spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'app', image: 'x', ports: [{ containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
});

async function stop(cp: ChildProcess | undefined): Promise<void> {
  if (!cp || cp.exitCode !== null || cp.signalCode !== null) return;
  const exited = new Promise<void>((r) => cp.once('exit', () => r()));
  cp.kill('SIGTERM');
  const timer = setTimeout(() => cp.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

const bounded = async <T,>(what: string, fn: () => Promise<T> | T, timeoutMs = 30_000): Promise<NonNullable<T>> => {
  const v = await waitFor(fn, timeoutMs, 50);
  if (!v) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  return v as NonNullable<T>;
};

describe('Kubernetes enrollment: CNI ADD, agent, annotation, control plane, HBONE', () => {
  const name = labName('kube');
  const tmp = mkdtempSync(join(tmpdir(), 'weft-kube-enroll-'));
  const netns = { a: `${name}-a`, b: `${name}-b` };
  // The node's own namespace, where the agent puts its probe rules (never the machine's).
  const nodeNetns = `${name}-node`;
  const cgRoot = join(cgroup2Mount(), name);
  const pinRoot = join(ensureBpffs(), 'weft', name);
  const socket = join(tmp, 'agent.sock');
  let api: FakeApiServer;
  let control: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  let sandboxB: ChildProcess | undefined;
  let xds: DeltaXdsClient | undefined;
  let agentArgs: string[] = [];
  let agentOut = '';
  let controlOut = '';
  const uid = { a: '', b: '' };
  const cgroupOf = (p: 'a' | 'b') => join(cgRoot, 'kubepods', `pod${uid[p]}`);
  const annotation = (p: string) => (api.get('Pod', 'shop', p)?.metadata.annotations as Record<string, string> | undefined)?.[REDIRECTION_ANNOTATION];
  const tunnel = (p: string) => xds?.state.workloads.get(`Kubernetes//Pod/shop/${p}`)?.tunnelProtocol;
  const enrolledUids = async () => ((await agentCall<{ pods: { info: { uid: string } }[] }>(socket, 'GET', '/v1/pods', undefined, 5000)).pods ?? []).map((p) => p.info.uid).sort();

  const startAgent = () => {
    agent = spawn(process.execPath, [BIN, ...agentArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    agent.stdout!.on('data', (d: Buffer) => (agentOut += d.toString()));
    agent.stderr!.on('data', (d: Buffer) => (agentOut += d.toString()));
  };
  const agentReady = () =>
    bounded('the agent to answer on its socket', async () => {
      if (agent?.exitCode !== null) throw new Error(`weft agent exited with ${agent?.exitCode}`);
      return agentCall(socket, 'GET', '/healthz', undefined, 1000).then(
        () => true,
        () => false,
      );
    });

  /** Runs a command as a process of pod a (its cgroup, then its netns): what it printed, and its status. */
  const inPodA = (cmd: string) => spawnSync('sh', ['-c', `echo $$ > ${cgroupOf('a')}/cgroup.procs && exec ip netns exec ${netns.a} ${cmd}`], { encoding: 'utf8', timeout: 20_000 });

  const cni = (command: 'ADD' | 'DEL') =>
    runPlugin(
      {
        CNI_COMMAND: command,
        CNI_CONTAINERID: 'c0ffee',
        CNI_NETNS: `/run/netns/${netns.a}`,
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/opt/cni/bin',
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=${uid.a}`,
      },
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'k8s-pod-network',
        type: 'weft-cni',
        kubeconfig: join(tmp, 'kubeconfig'),
        agentSocket: socket,
        cgroupRoot: cgRoot,
        prevResult: { cniVersion: '1.0.0', ips: [{ address: `${IP.a}/32` }] },
      }),
    );

  beforeAll(async () => {
    api = await FakeApiServer.start();
    for (const r of KUBE_RESOURCES) api.serve(r);
    api.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
    api.serve({ kind: 'Secret', apiVersion: 'v1', plural: 'secrets' });
    api.serve({ kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases' }); // leader election: the root ConfigMaps are leader-only
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'istio-system' }, status: { phase: 'Active' } });
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } }, status: { phase: 'Active' } });
    uid.a = api.apply(pod('a', 'node-1', IP.a)).metadata.uid as string;
    uid.b = api.apply(pod('b', 'node-1', IP.b)).metadata.uid as string;
    api.apply(pod('far', 'node-2', IP.far, true)); // enrolled by node-2's agent (not run here)
    api.tokenReview = (spec) =>
      spec.token === AGENT_TOKEN
        ? { authenticated: true, audiences: spec.audiences ?? [], user: { username: 'system:serviceaccount:istio-system:weft-agent', extra: { [NODE_NAME_EXTRA]: ['node-1'] } } }
        : { authenticated: false, error: 'invalid bearer token' };
    const kubeconfig = api.writeKubeconfig(tmp);

    // Two pods on node-1: netns with their address (on lo), no routes between them.
    sh('ip', 'netns', 'add', nodeNetns);
    for (const p of ['a', 'b'] as const) {
      sh('ip', 'netns', 'add', netns[p]);
      sh('ip', '-n', netns[p], 'link', 'set', 'lo', 'up');
      sh('ip', '-n', netns[p], 'addr', 'add', `${IP[p]}/32`, 'dev', 'lo');
      mkdirSync(cgroupOf(p), { recursive: true });
    }
    // Pod b runs before any agent: its app (an HTTP server) is the only trace of its sandbox.
    const www = join(tmp, 'www');
    mkdirSync(www);
    writeFileSync(join(www, 'hello.txt'), 'hello from b\n');
    sandboxB = spawn('sh', ['-c', `echo $$ > ${cgroupOf('b')}/cgroup.procs && exec ip netns exec ${netns.b} python3 -m http.server 8080 --bind ${IP.b} --directory ${www}`], { stdio: 'ignore' });

    const [plain, tls, metrics, aMetrics, aReady, aAdmin] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
    control = spawn(process.execPath, [BIN, 'control', '--kubeconfig', kubeconfig, '--agent-service-account', 'istio-system/weft-agent', '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1', '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    control.stdout!.on('data', (d: Buffer) => (controlOut += d.toString()));
    control.stderr!.on('data', (d: Buffer) => (controlOut += d.toString()));
    const root = await bounded('the control plane to publish its root', () => {
      if (control!.exitCode !== null) throw new Error(`weft control exited: ${controlOut}`);
      return (api.get('ConfigMap', 'istio-system', ROOT_CERT_CONFIGMAP) as { data?: Record<string, string> } | undefined)?.data?.[ROOT_CERT_KEY];
    });
    writeFileSync(join(tmp, 'root.pem'), root);
    writeFileSync(join(tmp, 'token'), AGENT_TOKEN);
    xds = new DeltaXdsClient({ address: `127.0.0.1:${plain}`, nodeId: 'test', log: pino({ level: 'silent' }) });
    xds.start();
    agentArgs = [
      'agent', '--node', 'node-1', '--kubeconfig', kubeconfig, '--socket', socket, '--state-dir', join(tmp, 'state'), '--pin-root', join(pinRoot, 'node-1'), '--capture', 'ebpf', '--node-netns', `/run/netns/${nodeNetns}`,
      '--xds-address', `127.0.0.1:${tls}`, '--root-cert', join(tmp, 'root.pem'), '--token-file', join(tmp, 'token'), '--control-server-name', SERVER_NAME,
      '--metrics-address', '127.0.0.1', '--metrics-port', String(aMetrics), '--readiness-port', String(aReady), '--admin-port', String(aAdmin),
    ];
  }, 60_000);

  afterAll(async () => {
    xds?.close();
    await stop(agent);
    await stop(control);
    sandboxB?.kill('SIGKILL');
    await api?.close();
    for (const n of [netns.a, netns.b, nodeNetns]) spawnSync('ip', ['netns', 'del', n]);
    rmSync(pinRoot, { recursive: true, force: true });
    // Cgroups go once their processes have (bounded).
    for (const p of ['a', 'b'] as const) await waitFor(() => { try { if (existsSync(cgroupOf(p))) rmdirSync(cgroupOf(p)); return true; } catch { return false; } }, 5000);
    for (const d of [join(cgRoot, 'kubepods'), cgRoot]) try { rmdirSync(d); } catch {}
    rmSync(tmp, { recursive: true, force: true });
  });

  const explain = (e: unknown) => {
    (e as Error).message += `\n--- weft agent output ---\n${agentOut.slice(-6000)}\n--- weft control output ---\n${controlOut.slice(-3000)}`;
    return e;
  };

  it('enrolls, annotates, is served as HBONE and carried over HBONE; survives an agent restart; DEL unmarks', async () => {
    try {
      await bounded('xDS: the three pods', () => xds!.synced && xds!.state.workloads.size === 3);
      expect([tunnel('a'), tunnel('b'), tunnel('far')]).toEqual(['NONE', 'NONE', 'HBONE']); // nothing captured yet

      // The agent starts and finds pod b, which ran all along, through /proc.
      startAgent();
      await agentReady();
      await bounded('pod b enrolled at start and annotated', () => annotation('b') === 'enabled');
      expect(await enrolledUids()).toEqual([uid.b]);
      const patches = api.requests.filter((r) => r.method === 'PATCH');
      expect(patches.map((r) => r.path)).toEqual(['/api/v1/namespaces/shop/pods/b/status']);
      expect(api.requests.some((r) => r.method === 'GET' && r.path === '/api/v1/pods' && r.query.get('fieldSelector') === 'spec.nodeName=node-1')).toBe(true);

      // CNI ADD of pod a: acknowledged only once captured and annotated. While the API refuses
      // the patch, ADD fails (the kubelet retries) rather than the pod starting as plaintext.
      api.fault = (r) => (r.method === 'PATCH' ? 503 : undefined);
      const refused = await cni('ADD');
      expect(refused.exitCode).toBe(1);
      expect((JSON.parse(refused.stdout) as { msg: string }).msg).toMatch(/shop\/a is ambient but the node agent did not capture it: agent: pod shop\/a: cannot set annotation ambient\.istio\.io\/redirection/);
      expect(annotation('a')).toBeUndefined();
      api.fault = undefined;
      const add = await cni('ADD');
      expect(add.exitCode, add.stdout + add.log.join('\n')).toBe(0);
      expect(annotation('a')).toBe('enabled');
      expect(await enrolledUids()).toEqual([uid.a, uid.b].sort());
      await bounded('the control plane serves a and b as HBONE', () => tunnel('a') === 'HBONE' && tunnel('b') === 'HBONE');

      // a -> b: only HBONE (node-local) gets there; a plaintext plan would dial from a's netns, which has no route.
      const hello = await bounded('a reaches b through the agent', () => {
        const r = inPodA(`curl -sf -m 5 http://${IP.b}:8080/hello.txt`);
        return r.status === 0 ? r.stdout : undefined;
      });
      expect(hello).toBe('hello from b\n');
      await bounded('access log: a -> b node-local', () => /"dst\.addr":"10\.244\.1\.6:8080".*"protocol":"node-local"/.test(agentOut));
      // a -> far (another node): HBONE to far's 15008 (unreachable here, so it fails after the plan).
      expect(inPodA(`curl -sf -m 5 http://${IP.far}:8080/`).status).not.toBe(0);
      await bounded('access log: a -> far over HBONE', () => /"dst\.hbone_addr":"10\.244\.2\.5:15008"[^\n]*"protocol":"HBONE"/.test(agentOut));

      // Agent restart; meanwhile a's annotation is lost (say a patch by someone else).
      await stop(agent);
      api.apply({ ...api.get('Pod', 'shop', 'a')!, metadata: { ...api.get('Pod', 'shop', 'a')!.metadata, annotations: {} } });
      await bounded('the control plane stops serving a as HBONE', () => tunnel('a') === 'NONE');
      agentOut = '';
      startAgent();
      await agentReady();
      expect(await enrolledUids()).toEqual([uid.a, uid.b].sort()); // re-adopted: /run/netns path and /proc/PID with its start time
      await bounded('the restarted agent puts the annotation back', () => annotation('a') === 'enabled');
      await bounded('the control plane serves a as HBONE again', () => tunnel('a') === 'HBONE');
      expect(inPodA(`curl -sf -m 5 --retry 3 --retry-connrefused http://${IP.b}:8080/hello.txt`).stdout).toBe('hello from b\n');

      // CNI DEL: released, unmarked.
      const del = await cni('DEL');
      expect(del.exitCode).toBe(0);
      expect(annotation('a')).toBeUndefined();
      expect(await enrolledUids()).toEqual([uid.b]);
      await bounded('the control plane serves a as NONE', () => tunnel('a') === 'NONE');
      expect(annotation('b')).toBe('enabled');
    } catch (e) {
      throw explain(e);
    }
  });
});
