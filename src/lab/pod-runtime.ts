// Runs a pod's containers as local processes: each is placed in the pod's cgroup first and then
// enters the pod's network namespace through `ip netns exec`, which also binds the pod's own
// hosts and resolv.conf over /etc. (Entering the cgroup after the netns would not work: `ip netns
// exec` remounts /sys.) Restarts follow the pod's restartPolicy with Kubernetes-like backoff.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { request } from 'node:http';
import { Socket } from 'node:net';
import { socketInNetns } from '../bpf/netns.ts';
import { builtinEntrypoint } from './images.ts';
import { mountArgv, type Mount } from './volumes.ts';
import { dirname } from 'node:path';
import { rootPath } from '../util/paths.ts';
import { builtinImage } from '../kube/manifest.ts';
import type { Container, Pod, Probe } from '../kube/objects.ts';
import { sleep } from '../util/sleep.ts';

export interface PodPlacement {
  netns: string;
  cgroup: string;
  ip: string;
  node: string;
  nodeIP: string;
  /** The node's netns, where the kubelet's probes come from. */
  nodeNetns: string;
  logPath: (container: string) => string;
  /** The container's volume mounts (./volumes.ts), bound before it starts; `stage` is a scratch directory for them. */
  mounts?: (c: Container) => Mount[];
  stage?: string;
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

export function containerEnv(pod: Pod, c: Container, p: Pick<PodPlacement, 'node' | 'ip' | 'nodeIP'>): Record<string, string> {
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
export function launchArgv(p: Pick<PodPlacement, 'cgroup' | 'netns'>, argv: string[]): string[] {
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
    const mounts = this.placement.mounts?.(c.spec) ?? [];
    const argv = mountArgv(mounts, this.placement.stage ?? '', containerArgv(c.spec), [rootPath(), dirname(process.execPath)]);
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
    // tcpSocket and httpGet come from the node, as a kubelet's do: a connection to the pod's IP
    // that the node's probe rules (agent/capture/node-probes.ts) let past the pod's capture.
    if (probe.tcpSocket) return probeFromNode(this.placement, port(probe.tcpSocket.port), () => Promise.resolve(true));
    if (probe.httpGet) {
      const { path = '/' } = probe.httpGet;
      return probeFromNode(this.placement, port(probe.httpGet.port), (sock, p) => httpGetOver(sock, this.placement.ip, p, path));
    }
    if (probe.exec) return (await this.execIn(probe.exec.command, 2000)) === 0;
    return true;
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

const PROBE_TIMEOUT_MS = 1000; // a kubelet's default timeoutSeconds

/** Connects from the node's netns to the pod and runs `check` on the connected socket; bounded. */
async function probeFromNode(p: PodPlacement, port: number, check: (sock: Socket, port: number) => Promise<boolean>): Promise<boolean> {
  if (!(port > 0 && port < 65536)) return false;
  const sock = new Socket({ fd: socketInNetns(`/run/netns/${p.nodeNetns}`, { family: 4, nonblock: true }), readable: true, writable: true });
  const timer = setTimeout(() => sock.destroy(), PROBE_TIMEOUT_MS);
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve).once('error', reject).once('close', () => reject(new Error('closed')));
      sock.connect(port, p.ip);
    });
    return await check(sock, port);
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}

/** A kubelet's httpGet: success is a status from 200 to 399. */
function httpGetOver(sock: Socket, host: string, port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path, createConnection: () => sock, headers: { 'user-agent': 'kube-probe/weft-lab', accept: '*/*' } }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 400);
    });
    req.on('error', () => resolve(false));
    sock.once('close', () => resolve(false));
    req.end();
  });
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
