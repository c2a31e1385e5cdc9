// The lab plays DaemonSet for the node agent: one `weft agent` per node, in the node's netns and
// cgroup, restarted when it exits unless a test stopped it on purpose.
import { join } from 'node:path';
import { agentHealthy } from '../api/enrollment.ts';
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
