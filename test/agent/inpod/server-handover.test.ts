// Enrollment while an agent hands over to its replacement: a request that arrives mid-handover
// waits (the pods are frozen), and once the new agent serves the socket it is forwarded there, so
// the CNI plugin never sees a failure or a pod enrolled with an agent that no longer serves it.
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { agentCall, type PodInfo } from '../../../src/api/enrollment.ts';
import { native } from '../../../src/bpf/addon.ts';
import { FdChannel, sendMessage } from '../../../src/bpf/fd-passing.ts';
import { PodsFrozen, type PodManager } from '../../../src/agent/inpod/pod-manager.ts';
import { serveEnrollment } from '../../../src/agent/inpod/server.ts';

const log = pino({ level: 'silent' });
const POD: PodInfo = { uid: 'pod-1', name: 'a', namespace: 'ns', serviceAccount: 'sa', ips: ['10.0.0.1'], netns: '/run/netns/x', cgroup: '/sys/fs/cgroup/x' };
const cleanup: (() => void)[] = [];
afterEach(() => cleanup.splice(0).forEach((f) => f()));

/** A pod manager that records what it was asked, and refuses while frozen as the real one does. */
function recorder(frozen = { on: false }) {
  const calls: string[] = [];
  const pods = {
    enroll: async (info: PodInfo) => {
      if (frozen.on) throw new PodsFrozen();
      calls.push(`enroll ${info.uid}`);
    },
    release: async (uid: string) => {
      if (frozen.on) throw new PodsFrozen();
      calls.push(`release ${uid}`);
      return true;
    },
    list: () => [],
  } as unknown as PodManager;
  return { pods, calls, frozen };
}

/** Another fd of the same socket, as the new agent gets it over SCM_RIGHTS. */
async function dupOf(fd: number): Promise<number> {
  const [a, b] = native().socketPair();
  const ch = FdChannel.fromFd(b);
  try {
    await sendMessage(a, { dup: true }, [fd]);
    return ch.receive(2000).fds[0]!;
  } finally {
    ch.close();
    closeSync(a);
  }
}

describe('enrollment during a handover', () => {
  it('holds a request mid-handover and forwards it to the new agent once it serves', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-enroll-ho-'));
    const socket = join(dir, 'agent.sock');
    const old = recorder({ on: false });
    let state: 'none' | 'preparing' | 'handed' = 'none';
    let settle = () => {};
    let settled = Promise.resolve();
    const gate = async () => {
      while (state === 'preparing') await settled;
      return state === 'handed' ? ('forward' as const) : ('serve' as const);
    };
    const a: Server = await serveEnrollment(socket, old.pods, log, { gate });
    cleanup.push(() => {
      a.close();
      rmSync(dir, { recursive: true, force: true });
    });
    expect(await agentCall(socket, 'PUT', '/v1/pods/pod-1', POD, 5000)).toEqual({ enrolled: true });
    expect(old.calls).toEqual(['enroll pod-1']);

    // Handing over: frozen; a request now waits.
    state = 'preparing';
    settled = new Promise((r) => (settle = r));
    old.frozen.on = true;
    const held = agentCall(socket, 'PUT', '/v1/pods/pod-2', { ...POD, uid: 'pod-2' }, 10_000);
    const heldDelete = agentCall(socket, 'DELETE', '/v1/pods/pod-1', undefined, 10_000);
    await new Promise((r) => setTimeout(r, 200));
    // The new agent serves the same socket...
    const fresh = recorder();
    const fd = await dupOf((a as unknown as { _handle: { fd: number } })._handle.fd);
    const b = await serveEnrollment(socket, fresh.pods, log, { inheritedFd: fd });
    cleanup.push(() => b.close());
    // ...and the old one stops accepting: the held requests go to the new one.
    state = 'handed';
    a.close();
    settle();
    expect(await held).toEqual({ enrolled: true });
    expect(await heldDelete).toEqual({ released: true });
    expect(old.calls).toEqual(['enroll pod-1']);
    expect(fresh.calls.sort()).toEqual(['enroll pod-2', 'release pod-1']);
    // The path still leads to the socket (the old server did not unlink it on close).
    expect(await agentCall(socket, 'PUT', '/v1/pods/pod-3', { ...POD, uid: 'pod-3' }, 5000)).toEqual({ enrolled: true });
    expect(fresh.calls).toContain('enroll pod-3');
  });
});
