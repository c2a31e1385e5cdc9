// The lab plays DaemonSet for the node agent: one `weft agent` per node, in the node's netns and
// cgroup, restarted when it exits unless a test stopped it on purpose.
import { join } from 'node:path';
import { agentCall, agentHealthy, ENROLLMENT_PATHS } from '../api/enrollment.ts';
import { agentEnv } from '../api/process-env.ts';
import { ensureBpffs } from '../bpf/mounts.ts';
import { weftBin } from '../util/paths.ts';
import { sleep } from '../util/sleep.ts';
import type { LabLayout } from './layout.ts';
import { SupervisedProcess } from './supervisor.ts';

export type CaptureMode = 'ebpf' | 'iptables';

export class NodeAgent extends SupervisedProcess {
  constructor(
    readonly node: string,
    layout: LabLayout,
    cgroup: string,
    capture: CaptureMode,
    onLog: (msg: string) => void,
    extraArgs: string[] = [],
  ) {
    const dir = join(layout.stateDir, 'nodes', node);
    super({
      name: `agent on ${node}`,
      netns: layout.nodeNetns(node),
      cgroup,
      logPath: join(layout.logDir, `agent_${node}.log`),
      onLog,
      env: agentEnv(process.env),
      argv: [
        // WEFT_AGENT_NODE_ARGS: extra Node flags for agents, e.g. --cpu-prof for `make bench`.
        process.execPath, ...(process.env.WEFT_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? []), weftBin, 'agent', '--node', node, '--socket', join(dir, 'agent.sock'), '--state-dir', dir,
        '--pin-root', join(layout.bpffsDir(ensureBpffs()), node), '--capture', capture, ...extraArgs,
      ],
    });
    this.socket = join(dir, 'agent.sock');
  }

  readonly socket: string;

  /**
   * An upgrade (a DaemonSet rolling with maxSurge 1): starts the current build as a second agent,
   * which takes the running one's sockets over (src/agent/handover); once it answers on the
   * enrollment socket, SIGTERMs the old one, which drains what it relays and exits on its own.
   */
  async upgrade(timeoutMs = 120_000): Promise<{ oldPid?: number; newPid?: number }> {
    const old = this.surge();
    const newPid = this.pid;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`the new ${this.spec.name} exited during the handover (see ${this.spec.logPath})`);
      const h = await agentCall<{ pid?: number }>(this.socket, 'GET', ENROLLMENT_PATHS.health, undefined, 1000).catch(() => undefined);
      if (h?.pid === newPid) break;
      if (Date.now() > deadline) throw new Error(`the new ${this.spec.name} did not take over within ${timeoutMs / 1000}s (see ${this.spec.logPath})`);
      await sleep(50);
    }
    old?.kill('SIGTERM');
    return { oldPid: old?.pid, newPid };
  }

  /** Waits until the agent answers on its enrollment socket (bounded). */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running && this.isHeld) throw new Error(`${this.spec.name} is stopped`);
      const ok = await agentHealthy(this.socket, 1000).then(
        () => true,
        () => false,
      );
      if (ok) return;
      await sleep(100);
    }
    throw new Error(`${this.spec.name} not ready after ${timeoutMs / 1000}s (see ${this.spec.logPath})`);
  }
}
