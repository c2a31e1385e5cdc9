// The lab runs the control plane as istiod would run in a cluster: one process, here in the
// namespace of the lab's L2 segment (reachable from every node at the bridge address), watching
// the lab's mirrored configuration. Each node gets its own credential for it (in Kubernetes,
// its ServiceAccount token).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_ENV } from '../api/process-env.ts';
import { weftBin } from '../util/paths.ts';
import { sleep } from '../util/sleep.ts';
import { FABRIC_IP, type LabLayout } from './layout.ts';
import { SupervisedProcess } from './supervisor.ts';

export const CONTROL_SERVER_NAME = 'weft-control.istio-system.svc';

export class LabControlPlane extends SupervisedProcess {
  readonly rootCert: string;
  readonly configDir: string;
  private readonly tokensFile: string;
  private readonly workloadTokensFile: string;

  constructor(
    private readonly layout: LabLayout,
    cgroup: string,
    onLog: (msg: string) => void,
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
      ],
      env: CONTROL_PLANE_ENV,
    });
    mkdirSync(join(dir, 'ca'), { recursive: true });
    this.rootCert = join(dir, 'root-cert.pem');
    this.configDir = join(layout.stateDir, 'config');
    this.tokensFile = join(dir, 'node-tokens.json');
    writeFileSync(this.tokensFile, '{}', { mode: 0o600 });
    this.workloadTokensFile = join(dir, 'workload-tokens.json');
    writeFileSync(this.workloadTokensFile, '{}', { mode: 0o600 });
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
