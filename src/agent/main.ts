// `weft agent`: one per node. Captures enrolled pods' traffic inside each pod (cgroup hooks and
// sk_lookup, or in-pod iptables), relays it, and exports metrics.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { assertKernelReady } from '../bpf/index.ts';
import { serveAdmin } from './admin/servers.ts';
import type { CaptureBackend } from './capture/backend.ts';
import { EbpfCapture } from './capture/ebpf.ts';
import { IptablesCapture } from './capture/iptables.ts';
import { PodManager } from './inpod/pod-manager.ts';
import { serveEnrollment } from './inpod/server.ts';
import { AgentMetrics } from './metrics/metrics.ts';

export interface AgentOptions {
  node: string;
  socket: string;
  stateDir: string;
  pinRoot: string;
  capture: 'ebpf' | 'iptables';
  metricsAddress: string;
  metricsPort: number;
  readinessPort: number;
  adminPort: number;
}

export async function runAgent(o: AgentOptions): Promise<void> {
  const log = pino({ base: { node: o.node, component: 'agent' } });
  mkdirSync(o.stateDir, { recursive: true });
  let backend: CaptureBackend;
  if (o.capture === 'ebpf') {
    assertKernelReady(); // names the missing program type, helper or mount
    backend = EbpfCapture.open(o.pinRoot);
  } else backend = await IptablesCapture.open();
  let ready = false;
  const metrics = new AgentMetrics(o.capture);
  const pods = new PodManager(backend, log, metrics, join(o.stateDir, 'inpod'));
  metrics.captureCounters = () => pods.counters();
  await pods.adopt();
  const admin = await serveAdmin({
    ...o,
    metrics,
    ready: () => ready,
    configDump: () => ({ node: o.node, captureMode: o.capture, pods: pods.list() }),
  });
  const enroll = await serveEnrollment(o.socket, pods, log);
  ready = true;
  log.info({ capture: o.capture, socket: o.socket, pods: pods.list().length }, 'agent ready');

  const stop = (sig: string) => {
    log.info({ sig }, 'agent stopping; pods stay captured and new connections fail until it returns');
    ready = false;
    enroll.close();
    admin.forEach((s) => s.close());
    pods.close();
    backend.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
