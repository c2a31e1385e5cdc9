// Picks the configuration source `weft control` was given: a directory or the Kubernetes API.
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { ConfigSource } from './config-store.ts';
import { DirSource } from './dir-source.ts';
import type { KubeSource } from './kube-source.ts';

export interface SourceOptions {
  configDir?: string;
  kubeconfig?: string;
  inCluster?: boolean;
}

/** The Kubernetes client loads only when the API is the source: a directory needs none of it. */
export async function openConfigSource(o: SourceOptions, log: Logger, registry: Registry): Promise<ConfigSource> {
  const given = [o.configDir !== undefined, o.kubeconfig !== undefined, !!o.inCluster].filter(Boolean).length;
  if (given !== 1) throw new Error('give exactly one of --config-dir, --kubeconfig, --in-cluster');
  if (o.configDir !== undefined) return new DirSource(o.configDir);
  const [{ loadKubeConfig }, { KubeSource }] = await Promise.all([import('./kube-api.ts'), import('./kube-source.ts')]);
  const source = new KubeSource(loadKubeConfig(o), log);
  registerKubeSourceMetrics(source, registry);
  return source;
}

/** The source's counters, read at scrape time. */
export function registerKubeSourceMetrics(source: KubeSource, registry: Registry): void {
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  counter('weft_control_kube_events_total', 'Kubernetes watch events applied', () => source.counters.events);
  counter('weft_control_kube_relists_total', 'Kubernetes lists after the first (expired watch or reconnect)', () => source.counters.relists);
  counter('weft_control_kube_errors_total', 'Kubernetes list or watch failures', () => source.counters.errors);
}
