// A lab component process (node agent, control plane): started inside a network namespace with
// nsenter (which, unlike `ip netns exec`, keeps the host's /sys so cgroups stay visible) and in
// its own cgroup, restarted after it exits unless it was stopped or is held down on purpose.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
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
  /** Replaced processes still running (draining what they serve), unsupervised. */
  private readonly retiring = new Set<ChildProcess>();
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

  /** Replaced processes that have not exited yet. */
  get retiringPids(): number[] {
    return [...this.retiring].map((p) => p.pid!).filter(Boolean);
  }

  /**
   * Starts a second process from the same spec (the current build) next to the running one, which
   * is no longer supervised from here on: a DaemonSet rolling with maxSurge. Returns the old one.
   */
  surge(): ChildProcess | undefined {
    const old = this.proc;
    if (old) {
      this.proc = undefined; // its exit no longer restarts anything
      this.retiring.add(old);
      old.once('exit', () => this.retiring.delete(old));
    }
    this.start();
    return old;
  }

  /** SIGKILL and keep it down (what a dead DaemonSet pod or crashed istiod looks like). */
  async kill(): Promise<void> {
    this.held = true;
    clearTimeout(this.restartTimer);
    const all = [...this.retiring, ...(this.proc ? [this.proc] : [])];
    await Promise.all(all.map((p) => {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      return gone;
    }));
  }

  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); no restart. Replaced processes still draining too. */
  async stop(graceMs = 5000): Promise<void> {
    this.closed = true;
    clearTimeout(this.restartTimer);
    const all = [...this.retiring, ...(this.proc ? [this.proc] : [])];
    await Promise.all(all.map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), graceMs);
      await Promise.race([gone, sleep(graceMs + 5000)]);
      clearTimeout(t);
    }));
  }
}
