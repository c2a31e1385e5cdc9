// Runs a pod's containers as local processes: each is placed in the pod's cgroup first and then
// enters the pod's network namespace through `ip netns exec`, which also binds the pod's own
// hosts and resolv.conf over /etc. (Entering the cgroup after the netns would not work: `ip netns
// exec` remounts /sys.) Restarts follow the pod's restartPolicy with Kubernetes-like backoff.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { builtinEntrypoint } from './images.ts';
import { builtinImage } from './manifest.ts';
import type { Container, Pod, Probe } from './objects.ts';
import { sleep } from '../util/sleep.ts';

export interface PodPlacement {
  netns: string;
  cgroup: string;
  ip: string;
  node: string;
  nodeIP: string;
  logPath: (container: string) => string;
}

interface ContainerState {
  spec: Container;
  proc?: ChildProcess;
  restarts: number;
  exitCode?: number;
  ready: boolean;
  started: boolean;
  startedAt?: string;
  waitingReason?: string;
}

/** The argv a container runs: command/args override a built-in image's entrypoint as in Kubernetes. */
export function containerArgv(c: Container): string[] {
  const img = builtinImage(c.image);
  const entry = c.command?.length ? c.command : img ? builtinEntrypoint(img) : [];
  return [...entry, ...(c.args ?? [])];
}

export function containerEnv(pod: Pod, c: Container, p: PodPlacement): Record<string, string> {
  const field: Record<string, string> = {
    'metadata.name': pod.metadata.name,
    'metadata.namespace': pod.metadata.namespace ?? 'default',
    'metadata.uid': pod.metadata.uid ?? '',
    'spec.nodeName': p.node,
    'spec.serviceAccountName': pod.spec.serviceAccountName ?? 'default',
    'status.podIP': p.ip,
    'status.hostIP': p.nodeIP,
  };
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    HOSTNAME: pod.metadata.name,
    // The built-in images read these; they mirror what a downward-API env block would give.
    POD_NAME: pod.metadata.name,
    POD_NAMESPACE: field['metadata.namespace']!,
    POD_IP: p.ip,
    NODE_NAME: p.node,
  };
  for (const e of c.env ?? []) env[e.name] = e.valueFrom?.fieldRef ? (field[e.valueFrom.fieldRef.fieldPath] ?? '') : (e.value ?? '');
  return env;
}

/** Launch argv that joins the cgroup, then the netns (with its /etc files). */
export function launchArgv(p: PodPlacement, argv: string[]): string[] {
  return ['sh', '-c', 'cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$ns" "$@"', 'sh', p.cgroup, p.netns, ...argv];
}

export class PodRuntime extends EventEmitter {
  readonly containers: ContainerState[];
  private stopping = false;
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly pod: Pod,
    readonly placement: PodPlacement,
  ) {
    super();
    this.containers = pod.spec.containers.map((spec) => ({ spec, restarts: 0, ready: false, started: false }));
  }

  start(): void {
    mkdirSync(this.placement.cgroup, { recursive: true });
    for (const c of this.containers) this.startContainer(c);
  }

  private startContainer(c: ContainerState): void {
    if (this.stopping) return;
    const argv = containerArgv(c.spec);
    const log = openSync(this.placement.logPath(c.spec.name), 'a');
    const proc = spawn(launchArgv(this.placement, argv)[0]!, launchArgv(this.placement, argv).slice(1), {
      cwd: c.spec.workingDir ?? '/',
      env: containerEnv(this.pod, c.spec, this.placement),
      stdio: ['ignore', log, log],
      detached: true, // own process group: stopping the pod signals the whole group
    });
    closeSync(log);
    c.proc = proc;
    c.started = true;
    c.exitCode = undefined;
    c.waitingReason = undefined;
    c.startedAt = new Date().toISOString();
    c.ready = !c.spec.readinessProbe;
    proc.on('error', (e) => this.appendLog(c, `weft: failed to start: ${e.message}`));
    proc.on('exit', (code, signal) => this.onExit(c, proc, code ?? (signal ? 128 : 1)));
    if (c.spec.readinessProbe) this.probeLoop(c, proc, c.spec.readinessProbe);
    this.emit('change');
  }

  private appendLog(c: ContainerState, line: string) {
    try {
      writeFileSync(this.placement.logPath(c.spec.name), line + '\n', { flag: 'a' });
    } catch {}
  }

  private onExit(c: ContainerState, proc: ChildProcess, code: number): void {
    if (c.proc !== proc) return;
    c.proc = undefined;
    c.exitCode = code;
    c.ready = false;
    c.started = false;
    this.emit('change');
    if (this.stopping) return;
    const policy = this.pod.spec.restartPolicy ?? 'Always';
    if (policy === 'Never' || (policy === 'OnFailure' && code === 0)) return;
    // CrashLoopBackOff: 1s, 2s, 4s ... capped at 30s (Kubernetes uses 10s..5min; a lab wants faster).
    const delay = Math.min(30_000, 1000 * 2 ** Math.min(c.restarts, 5));
    c.restarts++;
    c.waitingReason = 'CrashLoopBackOff';
    this.appendLog(c, `weft: container exited with code ${code}; restarting in ${delay / 1000}s`);
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.startContainer(c);
    }, delay);
    this.timers.add(t);
  }

  private probeLoop(c: ContainerState, proc: ChildProcess, probe: Probe): void {
    const period = (probe.periodSeconds ?? 10) * 1000;
    const tick = async (first: boolean) => {
      if (this.stopping || c.proc !== proc) return;
      const ok = await this.probe(c, probe).catch(() => false);
      if (this.stopping || c.proc !== proc) return;
      if (ok !== c.ready) {
        c.ready = ok;
        this.emit('change');
      }
      // Until first ready, probe quickly so a pod becomes an endpoint as soon as it listens.
      const next = !c.ready && first ? 250 : period;
      const t = setTimeout(() => {
        this.timers.delete(t);
        void tick(!c.ready && first);
      }, next);
      this.timers.add(t);
    };
    const t = setTimeout(() => void tick(true), (probe.initialDelaySeconds ?? 0) * 1000);
    this.timers.add(t);
  }

  private async probe(c: ContainerState, probe: Probe): Promise<boolean> {
    const port = (p: number | string) => (typeof p === 'number' ? p : c.spec.ports?.find((x) => x.name === p)?.containerPort ?? -1);
    if (probe.tcpSocket) return this.listening(port(probe.tcpSocket.port));
    if (probe.httpGet) {
      const url = `http://${this.placement.ip}:${port(probe.httpGet.port)}${probe.httpGet.path ?? '/'}`;
      return (await this.execIn(['curl', '-s', '-o', '/dev/null', '-m', '1', '-f', url], 2000)) === 0;
    }
    if (probe.exec) return (await this.execIn(probe.exec.command, 2000)) === 0;
    return true;
  }

  /** A tcpSocket probe succeeds once something in the pod listens on the port. */
  private listening(port: number): boolean {
    const pid = this.containers.find((x) => x.proc?.pid)?.proc?.pid;
    if (!pid) return false;
    const hex = port.toString(16).toUpperCase().padStart(4, '0');
    for (const f of ['tcp', 'tcp6']) {
      try {
        const rows = readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1);
        if (rows.some((r) => r.trim().split(/\s+/)[1]?.endsWith(`:${hex}`) && r.trim().split(/\s+/)[3] === '0A')) return true;
      } catch {}
    }
    return false;
  }

  private execIn(argv: string[], timeoutMs: number): Promise<number> {
    return new Promise((resolve) => {
      const full = launchArgv(this.placement, argv);
      const p = spawn(full[0]!, full.slice(1), { stdio: 'ignore' });
      const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('exit', (code) => {
        clearTimeout(t);
        resolve(code ?? 1);
      });
      p.on('error', () => resolve(1));
    });
  }

  get phase(): 'Pending' | 'Running' | 'Succeeded' | 'Failed' {
    if (this.containers.some((c) => c.proc)) return 'Running';
    if (this.containers.some((c) => c.waitingReason === 'CrashLoopBackOff')) return 'Running';
    if (this.containers.every((c) => c.exitCode !== undefined)) return this.containers.every((c) => c.exitCode === 0) ? 'Succeeded' : 'Failed';
    return 'Pending';
  }

  get ready(): boolean {
    return this.containers.every((c) => c.proc && c.ready);
  }

  pids(): number[] {
    return this.containers.flatMap((c) => (c.proc?.pid ? [c.proc.pid] : []));
  }

  /** SIGTERM to every process group, then cgroup.kill after the grace period. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const grace = Math.min(this.pod.spec.terminationGracePeriodSeconds ?? 5, 30) * 1000;
    for (const c of this.containers) {
      if (c.proc?.pid)
        try {
          process.kill(-c.proc.pid, 'SIGTERM');
        } catch {}
    }
    const deadline = Date.now() + grace;
    while (Date.now() < deadline && cgroupPids(this.placement.cgroup).length > 0) await sleep(50);
    await killCgroup(this.placement.cgroup);
    this.emit('change');
  }
}

export function cgroupPids(cg: string): number[] {
  try {
    return readFileSync(`${cg}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kills every process in a cgroup (and below) and removes it; bounded wait. */
export async function killCgroup(cg: string): Promise<void> {
  if (!existsSync(cg)) return;
  try {
    writeFileSync(`${cg}/cgroup.kill`, '1');
  } catch {
    for (const pid of cgroupPids(cg))
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
  }
  for (let i = 0; i < 100 && cgroupPids(cg).length > 0; i++) await sleep(20);
  try {
    rmdirSync(cg);
  } catch {}
}
