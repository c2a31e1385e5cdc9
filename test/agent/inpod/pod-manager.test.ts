// Re-adoption after an agent restart, with a pod whose netns was given as /proc/<pid>/ns/net
// (dockershim-style runtimes, and the agent's own reconcile at start): the agent records the
// process's start time with the PID and re-adopts the pod only while that same process holds the
// PID. A saved start time that differs is what a reused PID looks like: another process, maybe in
// another pod's netns, that the agent must not capture as this pod.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IptablesCapture } from '../../../src/agent/capture/iptables.ts';
import type { PodInfo } from '../../../src/api/enrollment.ts';
import { PodManager } from '../../../src/agent/inpod/pod-manager.ts';
import { procStartTime } from '../../../src/agent/inpod/proc.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import type { ProxyContext } from '../../../src/agent/proxy/context.ts';
import { waitFor } from '../../../src/util/sleep.ts';
import { labName } from '../../e2e/helpers.ts';

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
