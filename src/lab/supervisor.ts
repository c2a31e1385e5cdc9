// A lab component process (node agent, control plane): started inside a network namespace with
// nsenter (which, unlike `ip netns exec`, keeps the host's /sys so cgroups stay visible) and in
// its own cgroup, restarted after it exits unless it was stopped or is held down on purpose.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export interface ProcessSpec {
  name: string;
  netns: string;
  cgroup: string;
  argv: string[];
  /** Added to the daemon's environment. */
  env?: Readonly<Record<string, string>>;
  logPath: string;
  onLog: (msg: string) => void;
}

export class SupervisedProcess {
  private proc?: ChildProcess;
  private held = false;
  private closed = false;
  private restartTimer?: NodeJS.Timeout;
  restarts = 0;

  constructor(readonly spec: ProcessSpec) {}

  get pid() {
    return this.proc?.pid;
  }
  get running() {
    return !!this.proc;
  }
  get isHeld() {
    return this.held;
  }

  start(): void {
    if (this.proc || this.closed) return;
    this.held = false;
    const s = this.spec;
    mkdirSync(s.cgroup, { recursive: true });
    mkdirSync(dirname(s.logPath), { recursive: true });
    const log = openSync(s.logPath, 'a');
    const p = spawn('sh', ['-c', 'cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="/run/netns/$ns" "$@"', 'sh', s.cgroup, s.netns, ...s.argv], {
      stdio: ['ignore', log, log],
      detached: true,
      env: s.env ? { ...process.env, ...s.env } : process.env,
    });
    closeSync(log);
    this.proc = p;
    p.on('exit', (code, sig) => {
      if (this.proc !== p) return;
      this.proc = undefined;
      if (this.closed || this.held) return;
      s.onLog(`${s.name} exited (${sig ?? code}); restarting in 1s`);
      this.restarts++;
      this.restartTimer = setTimeout(() => this.start(), 1000);
    });
  }

  /** SIGKILL and keep it down (what a dead DaemonSet pod or crashed istiod looks like). */
  async kill(): Promise<void> {
    this.held = true;
    clearTimeout(this.restartTimer);
    const p = this.proc;
    if (!p) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); no restart. */
  async stop(graceMs = 5000): Promise<void> {
    this.closed = true;
    clearTimeout(this.restartTimer);
    const p = this.proc;
    if (!p) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(t);
  }
}
