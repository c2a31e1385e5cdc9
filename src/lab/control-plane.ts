// The lab runs the control plane as istiod would run in a cluster: one process, here in the
// namespace of the lab's L2 segment (reachable from every node at the bridge address), watching
// the lab's mirrored configuration. Each node gets its own credential for it (in Kubernetes,
// its ServiceAccount token).
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_ENV } from '../api/process-env.ts';
import { weftBin } from '../util/paths.ts';
import { sleep } from '../util/sleep.ts';
import { FABRIC_IP, type LabLayout } from './layout.ts';
import { SupervisedProcess } from './supervisor.ts';

export const CONTROL_SERVER_NAME = 'weft-control.istio-system.svc';

/**
 * Drain timings of the lab's control plane: streams ended over 1 s, exit within 8 s; the
 * supervisor waits a little longer before SIGKILL (a pod's terminationGracePeriodSeconds).
 */
const DRAIN = { spreadMs: 1000, deadlineMs: 8000, killAfterMs: 12_000 };

export class LabControlPlane extends SupervisedProcess {
  readonly rootCert: string;
  readonly configDir: string;
  private readonly tokensFile: string;
  private readonly workloadTokensFile: string;

  constructor(
    private readonly layout: LabLayout,
    cgroup: string,
    onLog: (msg: string) => void,
    /** 0: the lab's first control plane; n: the n-th replica an upgrade started beside the running one (same files, same addresses). */
    readonly replica = 0,
  ) {
    const dir = join(layout.stateDir, 'control');
    super({
      name: 'control plane',
      netns: layout.fabricNetns,
      cgroup,
      logPath: join(layout.logDir, 'control.log'),
      onLog,
      argv: [
        process.execPath, weftBin, 'control', '--config-dir', join(layout.stateDir, 'config'), '--ca-dir', join(dir, 'ca'),
        '--node-tokens', join(dir, 'node-tokens.json'), '--workload-tokens', join(dir, 'workload-tokens.json'), '--root-cert-out', join(dir, 'root-cert.pem'),
        '--server-name', CONTROL_SERVER_NAME, '--server-ip', FABRIC_IP,
        // Every replica listens with SO_REUSEPORT, so an upgrade can start the next one on the
        // same addresses while this one still serves (the agents' one --xds-address).
        '--reuse-port', '--drain-spread-ms', String(DRAIN.spreadMs), '--drain-deadline-ms', String(DRAIN.deadlineMs),
      ],
      env: CONTROL_PLANE_ENV,
    });
    mkdirSync(join(dir, 'ca'), { recursive: true });
    this.rootCert = join(dir, 'root-cert.pem');
    this.configDir = join(layout.stateDir, 'config');
    this.tokensFile = join(dir, 'node-tokens.json');
    this.workloadTokensFile = join(dir, 'workload-tokens.json');
    // A replica shares the credentials the agents and waypoints already hold.
    if (replica === 0) {
      writeFileSync(this.tokensFile, '{}', { mode: 0o600 });
      writeFileSync(this.workloadTokensFile, '{}', { mode: 0o600 });
    }
  }

  private logFrom = 0;

  override start(): void {
    this.logFrom = existsSync(this.spec.logPath) ? statSync(this.spec.logPath).size : 0;
    super.start();
  }

  /** SIGTERM: the control plane drains (its clients move to another replica) and exits; SIGKILL if it overruns. */
  override stop(): Promise<void> {
    return super.stop(DRAIN.killAfterMs);
  }

  /**
   * Waits (bounded) until this process logged that it serves. Its replicas share the addresses
   * and the log file, so it is told by its pid (nsenter execs: the pid is the control plane's).
   */
  async waitServing(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const mine = new RegExp(`"pid":${this.pid}\\b.*"msg":"control plane ready"`);
    for (;;) {
      if (!this.running) throw new Error(`control plane replica ${this.replica} exited before it was ready (see ${this.spec.logPath})`);
      const fd = openSync(this.spec.logPath, 'r');
      try {
        const size = statSync(this.spec.logPath).size;
        const buf = Buffer.alloc(Math.max(0, size - this.logFrom));
        readSync(fd, buf, 0, buf.length, this.logFrom);
        if (mine.test(buf.toString('utf8'))) return;
      } finally {
        closeSync(fd);
      }
      if (Date.now() > deadline) throw new Error(`control plane replica ${this.replica} not ready after ${timeoutMs / 1000}s (see ${this.spec.logPath})`);
      await sleep(100);
    }
  }

  /**
   * A service account's token for the CA (audience istio-ca), as the kubelet gets a projected
   * token from the API server's TokenRequest; the control plane reads the file on its next lookup.
   */
  workloadToken(namespace: string, serviceAccount: string): string {
    const tokens = JSON.parse(readFileSync(this.workloadTokensFile, 'utf8')) as Record<string, string>;
    const token = randomBytes(24).toString('hex');
    tokens[token] = `${namespace}/${serviceAccount}`;
    // Replaced whole: the control plane never reads a half-written file.
    writeFileSync(`${this.workloadTokensFile}.tmp`, JSON.stringify(tokens), { mode: 0o600 });
    renameSync(`${this.workloadTokensFile}.tmp`, this.workloadTokensFile);
    return token;
  }

  /** The mesh root, as the istio-ca-root-cert ConfigMap istiod publishes in every namespace holds it. */
  rootCertPem(): string {
    return readFileSync(this.rootCert, 'utf8');
  }

  /** Issues a node's credential; returns the file the node agent reads it from. */
  nodeToken(node: string): string {
    const tokens = JSON.parse(readFileSync(this.tokensFile, 'utf8')) as Record<string, string>;
    const token = randomBytes(24).toString('hex');
    tokens[token] = node;
    writeFileSync(this.tokensFile, JSON.stringify(tokens), { mode: 0o600 });
    const file = join(this.layout.stateDir, 'nodes', node, 'token');
    mkdirSync(join(this.layout.stateDir, 'nodes', node), { recursive: true });
    writeFileSync(file, token, { mode: 0o600 });
    return file;
  }

  /** The agents' flags for reaching this control plane. */
  agentArgs(tokenFile: string): string[] {
    return ['--xds-address', `${FABRIC_IP}:15012`, '--root-cert', this.rootCert, '--token-file', tokenFile, '--control-server-name', CONTROL_SERVER_NAME];
  }

  /** Waits for the CA root to be published (bounded). */
  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(this.rootCert)) {
      if (Date.now() > deadline) throw new Error(`control plane not ready after ${timeoutMs / 1000}s (see ${this.spec.logPath})`);
      await sleep(100);
    }
  }
}
