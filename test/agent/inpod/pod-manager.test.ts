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
