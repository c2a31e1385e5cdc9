// The lab's mesh: the control plane (as istiod) and a node agent on every node (as the agent
// DaemonSet), with the controls tests use to kill and restart them, and the check that every
// agent sees every ready pod.
import { join } from 'node:path';
import { listWorkloads } from '../api/enrollment.ts';
import type { Pod } from '../kube/objects.ts';
import { NodeAgent, type CaptureMode } from './agents.ts';
import { LabControlPlane } from './control-plane.ts';
import { POD_NETWORK, type LabLayout } from './layout.ts';
import type { LabNode } from './nodes.ts';

export class LabMesh {
  readonly agents = new Map<string, NodeAgent>();
  control?: LabControlPlane;

  constructor(
    private readonly layout: LabLayout,
    private readonly cg2: string,
    private readonly capture: CaptureMode,
    private readonly certTtl: number | undefined,
    private readonly onLog: (msg: string) => void,
  ) {}

  /** Starts the control plane, then an agent per node; returns when all answer. */
  async start(nodes: readonly LabNode[]): Promise<void> {
    this.control = new LabControlPlane(this.layout, join(this.layout.cgroupRoot(this.cg2), 'control'), this.onLog);
    this.control.start();
    await this.control.waitReady();
    for (const n of nodes) {
      const args = [...this.control.agentArgs(this.control.nodeToken(n.name)), '--pod-cidrs', POD_NETWORK.join(','), ...(this.certTtl ? ['--cert-ttl', String(this.certTtl)] : [])];
      const a = new NodeAgent(n.name, this.layout, this.layout.nodeCgroup(this.cg2, n.name), this.capture, this.onLog, args);
      this.agents.set(n.name, a);
      a.start();
    }
    await Promise.all([...this.agents.values()].map((a) => a.waitReady(60_000)));
  }

  /** Kills a node's agent and keeps it down, or starts it again (the lab's DaemonSet controls). */
  async agentControl(node: string, action: 'kill' | 'start' | 'upgrade'): Promise<{ oldPid?: number; newPid?: number } | void> {
    const a = this.agents.get(node);
    if (!a) throw new Error(`no agent on node "${node}"`);
    if (action === 'upgrade') return a.upgrade();
    if (action === 'kill') await a.kill();
    else {
      a.start();
      await a.waitReady();
    }
  }

  /** Kills the control plane and keeps it down, or starts it again. */
  async controlPlaneControl(action: 'kill' | 'start'): Promise<void> {
    if (!this.control) throw new Error('this lab runs no control plane (--capture none)');
    if (action === 'kill') await this.control.kill();
    else {
      this.control.start();
      await this.control.waitReady();
    }
  }

  private replicas = 0;

  /**
   * A rolling upgrade of the control plane, as a Deployment with maxSurge 1 and maxUnavailable 0
   * does it: a new replica (the current build) starts beside the running one on the same
   * addresses (SO_REUSEPORT), and once it serves the old one is sent SIGTERM; it drains, its
   * agents reconnect to the new one and resume from the state they hold.
   */
  async controlPlaneUpgrade(): Promise<{ oldPid?: number; newPid?: number; drainMs: number }> {
    const old = this.control;
    if (!old) throw new Error('this lab runs no control plane (--capture none)');
    if (!old.running) throw new Error('the control plane is down: `weft control-plane start` first');
    const replica = ++this.replicas;
    const next = new LabControlPlane(this.layout, join(this.layout.cgroupRoot(this.cg2), `control-${replica}`), this.onLog, replica);
    next.start();
    try {
      await next.waitServing();
    } catch (e) {
      await next.stop();
      throw e;
    }
    this.control = next;
    const oldPid = old.pid;
    const started = Date.now();
    await old.stop();
    this.onLog(`control plane upgraded: pid ${oldPid} drained in ${Date.now() - started} ms, pid ${next.pid} serves`);
    return { oldPid, newPid: next.pid, drainMs: Date.now() - started };
  }

  /** True when every running agent's mesh state shows every ready pod as a healthy workload. */
  async converged(ready: Pod[]): Promise<boolean> {
    for (const a of this.agents.values()) {
      if (!a.running) continue;
      const r = await listWorkloads(a.socket, 2000).catch(() => undefined);
      if (!r) return false;
      const healthy = new Set(r.workloads.filter((w) => w.status === 'HEALTHY').map((w) => `${w.namespace}/${w.name}`));
      if (ready.some((p) => !healthy.has(`${p.metadata.namespace}/${p.metadata.name}`))) return false;
    }
    return true;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.stop()));
    await this.control?.stop();
  }
}
