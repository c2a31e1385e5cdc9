// Re-adoption after an agent restart, with a pod whose netns was given as /proc/<pid>/ns/net
// (dockershim-style runtimes, and the agent's own reconcile at start): the agent records the
// process's start time with the PID and re-adopts the pod only while that same process holds the
// PID. A saved start time that differs is what a reused PID looks like: another process, maybe in
// another pod's netns, that the agent must not capture as this pod.
// And a pod whose certificate the CA refused for a while serves HBONE as soon as the certificate
// arrives, not at the end of its retry backoff (peers wait in the listener's backlog meanwhile).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IptablesCapture } from '../../../src/agent/capture/iptables.ts';
import { CertificateAuthority } from '../../../src/control/ca/index.ts';
import { createHboneServer } from '../../../src/hbone/index.ts';
import { CertManager } from '../../../src/identity/index.ts';
import type { PodInfo } from '../../../src/api/enrollment.ts';
import { PodManager } from '../../../src/agent/inpod/pod-manager.ts';
import { procStartTime } from '../../../src/agent/inpod/proc.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import type { ProxyContext } from '../../../src/agent/proxy/context.ts';
import { waitFor } from '../../../src/util/sleep.ts';
import { run } from '../../../src/util/exec.ts';
import { nativeRelay } from '../../../src/hbone/native/pipe.ts';
import { engineCache } from '../../../src/agent/proxy/context.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import { labName } from '../../e2e/helpers.ts';
import { SERVER_NAME, startCA, tmpDir } from '../../control/ca/helpers.ts';

describe('re-adopting a /proc/<pid>/ns/net pod', () => {
  const netns = labName('pm');
  const dir = mkdtempSync(join(tmpdir(), 'weft-pod-manager-'));
  const log = pino({ level: 'silent' });
  const metrics = new AgentMetrics('iptables');
  let sandbox: ChildProcess;
  let iptables: IptablesCapture;
  let info: PodInfo;
  const manager = () => new PodManager({ default: 'iptables', iptables }, log, metrics, join(dir, 'state'), { log, metrics } as unknown as ProxyContext);
  const saved = () => JSON.parse(readFileSync(join(dir, 'state', 'pods.json'), 'utf8')) as PodInfo[];

  beforeAll(async () => {
    iptables = await IptablesCapture.open();
    spawnSync('ip', ['netns', 'add', netns]);
    spawnSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    sandbox = spawn('ip', ['netns', 'exec', netns, 'sleep', '600'], { stdio: 'ignore' }); // exec: the same PID
    await new Promise((r) => sandbox.once('spawn', r));
    // Only once the sandbox is inside the pod netns (never capture in this host's netns).
    const inside = () => {
      try {
        return statSync(`/proc/${sandbox.pid}/ns/net`).ino === statSync(`/run/netns/${netns}`).ino;
      } catch {
        return false;
      }
    };
    if (!(await waitFor(inside, 10_000, 20))) throw new Error(`the sandbox process did not enter netns ${netns}`);
    info = { uid: 'u-1', name: 'web', namespace: 'shop', serviceAccount: 'web', ips: ['10.244.9.5'], netns: `/proc/${sandbox.pid}/ns/net`, cgroup: dir };
  });
  afterAll(() => {
    sandbox?.kill('SIGKILL');
    spawnSync('ip', ['netns', 'del', netns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('records the start time, re-adopts the same process, and refuses a PID that another process holds', async () => {
    const pm = manager();
    await pm.enroll(info);
    expect(saved()).toEqual([{ ...info, pidStartTime: procStartTime(sandbox.pid!) }]);
    pm.close();

    const again = manager();
    await again.adopt();
    expect(again.list().map((p) => p.info.uid)).toEqual(['u-1']);
    again.close();

    // The saved PID now names a process started at another time.
    writeFileSync(join(dir, 'state', 'pods.json'), JSON.stringify([{ ...info, pidStartTime: String(Number(procStartTime(sandbox.pid!)) + 1) }]));
    const reused = manager();
    await reused.adopt();
    expect(reused.list()).toEqual([]);
    expect(saved()).toEqual([]);
    reused.close();
  });

  it('does not enroll a /proc netns whose process is gone', async () => {
    const gone = spawn('sleep', ['600']);
    await new Promise((r) => gone.once('spawn', r));
    const path = `/proc/${gone.pid}/ns/net`;
    gone.kill('SIGKILL');
    await new Promise((r) => gone.once('exit', r));
    const pm = manager();
    await expect(pm.enroll({ ...info, uid: 'u-2', netns: path })).rejects.toThrow(/process \d+ of netns .* is gone/);
    pm.close();
  });
});

describe('a pod waiting for its certificate', () => {
  const netns = labName('pmc');
  const dir = tmpDir('weft-pod-manager-ca-');
  const lines: { time: number; msg: string; attempt?: number }[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as (typeof lines)[number]) });
  const metrics = new AgentMetrics('iptables');
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', netns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves HBONE as soon as the refused certificate is issued, not after its backoff sleep', async () => {
    spawnSync('ip', ['netns', 'add', netns]);
    spawnSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    const t = await startCA(await CertificateAuthority.create(), dir);
    // The manager retries the CA every ~100 ms; the pod's HBONE loop backs off to 8 s sleeps.
    const certs = new CertManager({ address: t.address, rootPem: t.ca.rootPem, serverName: SERVER_NAME, nodeToken: 'tok-a', log, backoff: { baseMs: 100, capMs: 100 } });
    const ctx = { log, metrics, trustDomain: 'cluster.local', certs, serveHbone: createHboneServer } as unknown as ProxyContext;
    const pm = new PodManager({ default: 'iptables', iptables: await IptablesCapture.open() }, log, metrics, join(dir, 'state'), ctx);
    const pod: PodInfo = { uid: 'u-c', name: 'late', namespace: 'shop', serviceAccount: 'late', ips: ['10.244.9.6'], netns: `/run/netns/${netns}`, cgroup: dir };
    try {
      await pm.enroll(pod);
      // The fifth refusal starts an 8 s sleep in the pod's HBONE loop.
      expect(await waitFor(() => lines.some((l) => l.msg === 'no certificate yet for the pod; HBONE waits' && l.attempt === 4), 20_000)).toBe(true);
      t.scheduled.add('node-a|spiffe://cluster.local/ns/shop/sa/late');
      const issued = await waitFor(() => lines.find((l) => l.msg === 'workload certificate issued'), 10_000);
      expect(issued).toBeDefined();
      const ready = await waitFor(() => lines.find((l) => l.msg === 'hbone ready'), 10_000);
      expect(ready).toBeDefined();
      // Woken by the certificate: well inside the 8 s the backoff would have slept.
      expect(ready!.time - issued!.time).toBeLessThan(4_000);
    } finally {
      await pm.release('u-c').catch(() => undefined);
      pm.close();
      certs.close();
      await t.stop();
    }
  }, 40_000);
});

// On the native data path the relay thread accepts on 15001 (no Node socket per connection); what
// the agent decides is as before: here a direct connection to the agent's own port, refused with a
// reset and NR, the source being the client's port. Freezing for a handover does not stop accepting;
// retiring does.
describe('the outbound listener on the native data path', () => {
  const netns = labName('pmn');
  const dir = tmpDir('weft-pod-manager-native-');
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const metrics = new AgentMetrics('iptables');
  afterAll(() => {
    spawnSync('ip', ['netns', 'del', netns]);
    rmSync(dir, { recursive: true, force: true });
  });
  // From inside the pod: the client's port, then how the connection ended.
  const dial = () =>
    run(['ip', 'netns', 'exec', netns, 'python3', '-c', [
      'import socket',
      // Bound first: the port is known even when the reset beats connect() back to the client.
      's = socket.socket()',
      's.bind(("127.0.0.1", 0))',
      'port = s.getsockname()[1]',
      's.settimeout(3)',
      'try:',
      '  s.connect(("127.0.0.1", 15001))',
      '  print(port, "eof" if s.recv(1) == b"" else "data")',
      'except ConnectionRefusedError:',
      '  print(port, "refused")',
      'except ConnectionResetError:',
      '  print(port, "reset")',
      'except socket.timeout:',
      '  print(port, "timeout")',
    ].join('\n')]).then((out) => out.trim().split(' '));

  it('accepts on the relay thread and refuses as before; freeze keeps accepting, retire stops', async () => {
    spawnSync('ip', ['netns', 'add', netns]);
    spawnSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    const state = MeshState.empty();
    const ctx = {
      log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
      state: () => state, synced: () => true, engine: engineCache('istio-system'), relay: nativeRelay, nativeAccept: true,
    } as unknown as ProxyContext;
    const pm = new PodManager({ default: 'iptables', iptables: await IptablesCapture.open() }, log, metrics, join(dir, 'state'), ctx);
    const pod: PodInfo = { uid: 'u-n', name: 'web', namespace: 'shop', serviceAccount: 'web', ips: ['10.244.9.7'], netns: `/run/netns/${netns}`, cgroup: dir };
    const refused = (port: string) => lines.find((l) => String(l['src.addr']).endsWith(`:${port}`));
    try {
      await pm.enroll(pod);
      const [port, how] = await dial();
      expect(how).toBe('reset');
      expect(await waitFor(() => refused(port!), 5000)).toMatchObject({ direction: 'outbound', response_flags: 'NR' });
      pm.freeze();
      const [port2, how2] = await dial();
      expect(how2).toBe('reset');
      expect(await waitFor(() => refused(port2!), 5000)).toMatchObject({ response_flags: 'NR' });
      pm.thaw();
      await pm.retire(100);
      // This agent's copy closed and no other agent holds it: nothing listens on 15001 any more.
      expect(await waitFor(async () => (await dial())[1] === 'refused', 5000)).toBe(true);
    } finally {
      pm.close();
    }
  }, 30_000);
});
