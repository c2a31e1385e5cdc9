// The lab plays DaemonSet for the node agent: one `weft agent` per node, inside the node's netns
// (entered with nsenter, which keeps the host's /sys so cgroups stay visible) and in the node's
// cgroup, restarted when it exits, unless a test stopped it on purpose.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentCall } from '../agent/inpod/client.ts';
import { ensureBpffs } from '../bpf/mounts.ts';
import { sleep } from '../util/sleep.ts';
import type { LabLayout } from './layout.ts';

const BIN = fileURLToPath(new URL('../../bin/weft.js', import.meta.url));

export type CaptureMode = 'ebpf' | 'iptables';

export class NodeAgent {
  private proc?: ChildProcess;
  private held = false;
  private closed = false;
  private restartTimer?: NodeJS.Timeout;
  restarts = 0;

  constructor(
    readonly node: string,
    private readonly layout: LabLayout,
    private readonly cgroup: string,
    private readonly capture: CaptureMode,
    private readonly onLog: (msg: string) => void,
  ) {}

  get dir() {
    return join(this.layout.stateDir, 'nodes', this.node);
  }
  get socket() {
    return join(this.dir, 'agent.sock');
  }
  get logPath() {
    return join(this.layout.logDir, `agent_${this.node}.log`);
  }
  get pid() {
    return this.proc?.pid;
  }
  get running() {
    return !!this.proc;
  }

  start(): void {
    if (this.proc || this.closed) return;
    this.held = false;
    mkdirSync(this.dir, { recursive: true });
    mkdirSync(this.layout.logDir, { recursive: true });
    const args = [
      BIN, 'agent', '--node', this.node, '--socket', this.socket, '--state-dir', this.dir,
      '--pin-root', join(this.layout.bpffsDir(ensureBpffs()), this.node), '--capture', this.capture,
    ];
    const log = openSync(this.logPath, 'a');
    const p = spawn(
      'sh',
      ['-c', 'cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" "$@"', 'sh', this.cgroup, this.layout.nodeNetns(this.node), process.execPath, ...args],
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    this.proc = p;
    p.on('exit', (code, sig) => {
      if (this.proc !== p) return;
      this.proc = undefined;
      if (this.closed || this.held) return;
      this.onLog(`agent on ${this.node} exited (${sig ?? code}); restarting in 1s`);
      this.restarts++;
      this.restartTimer = setTimeout(() => this.start(), 1000);
    });
  }

  /** Waits until the agent answers on its enrollment socket (bounded). */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.proc && this.held) throw new Error(`agent on ${this.node} is stopped`);
      const ok = await agentCall(this.socket, 'GET', '/healthz', undefined, 1000).then(
        () => true,
        () => false,
      );
      if (ok) return;
      await sleep(100);
    }
    throw new Error(`agent on ${this.node} not ready after ${timeoutMs / 1000}s (see ${this.logPath})`);
  }

  /** Kills the agent and keeps it down (a dead agent, for tests and demos). */
  async kill(): Promise<void> {
    this.held = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const p = this.proc;
    if (!p) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  async stop(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const p = this.proc;
    if (!p) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }
}
