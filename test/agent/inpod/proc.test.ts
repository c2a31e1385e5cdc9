// PID reuse: a pod saved with netns /proc/<pid>/ns/net is re-adopted only while the same process
// (same start time, field 22 of /proc/<pid>/stat) holds that PID.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PodInfo } from '../../../src/api/enrollment.ts';
import { readoptRefusal } from '../../../src/agent/inpod/pod-manager.ts';
import { netnsPid, procStartTime } from '../../../src/agent/inpod/proc.ts';

const pod = (netns: string, extra: Partial<PodInfo> = {}): PodInfo => ({ uid: 'u', name: 'p', namespace: 'n', serviceAccount: 'sa', ips: ['10.0.0.1'], netns, cgroup: tmpdir(), ...extra });

describe('process start times', () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('reads field 22 even when the command name holds spaces and parentheses', () => {
    const proc = mkdtempSync(join(tmpdir(), 'weft-proc-'));
    dirs.push(proc);
    mkdirSync(join(proc, '42'));
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)); // field 3 onwards
    fields[22 - 3] = '987654';
    writeFileSync(join(proc, '42', 'stat'), `42 (a) b (c) ${fields.join(' ')}\n`);
    expect(procStartTime(42, proc)).toBe('987654');
    expect(procStartTime(43, proc)).toBeUndefined();
    expect(netnsPid(`${proc}/42/ns/net`, proc)).toBe(42);
    expect(netnsPid('/run/netns/x')).toBeUndefined();
  });

  it("this process's start time is stable and differs from a later process's", async () => {
    const mine = procStartTime(process.pid)!;
    expect(mine).toMatch(/^\d+$/);
    expect(procStartTime(process.pid)).toBe(mine);
    const child = spawn('sleep', ['30']);
    try {
      await new Promise((r) => child.once('spawn', r));
      expect(procStartTime(child.pid!)).toMatch(/^\d+$/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('re-adoption: same process yes; a reused PID, an unknown start time or a gone process no', async () => {
    const child = spawn('sleep', ['30']);
    try {
      await new Promise((r) => child.once('spawn', r));
      const netns = `/proc/${child.pid}/ns/net`;
      const started = procStartTime(child.pid!)!;
      expect(readoptRefusal(pod(netns, { pidStartTime: started }))).toBeUndefined();
      // The same PID number held by a process started at another time: what a reused PID looks like.
      expect(readoptRefusal(pod(netns, { pidStartTime: String(Number(started) + 1) }))).toMatch(/PID \d+ now belongs to another process/);
      expect(readoptRefusal(pod(netns))).toMatch(/without the process start time/);
      expect(readoptRefusal(pod(netns, { pidStartTime: started, cgroup: '/nonexistent/cgroup' }))).toMatch(/cgroup .* is gone/);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    expect(readoptRefusal(pod(`/proc/${child.pid}/ns/net`, { pidStartTime: '1' }))).toMatch(/gone/);
    expect(readoptRefusal(pod('/run/netns/weft-no-such-netns'))).toMatch(/netns .* is gone/);
  });
});
