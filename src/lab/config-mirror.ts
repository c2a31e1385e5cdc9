// The lab keeps a directory of Kubernetes YAML that mirrors its cluster (objects with their
// status: pod IPs, readiness, ClusterIPs), which `weft control --config-dir` watches. This is
// the lab's stand-in for the Kubernetes API; files change only when their object does.
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KObject } from '../kube/objects.ts';

export class ConfigMirror {
  private written = new Map<string, string>();

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(dir)) rmSync(join(dir, f), { force: true });
  }

  sync(objects: KObject[]): void {
    const seen = new Set<string>();
    for (const o of objects) {
      const file = `${o.kind}.${o.metadata.namespace ?? '_'}.${o.metadata.name}.yaml`;
      seen.add(file);
      const text = stringify(o);
      if (this.written.get(file) === text) continue;
      const tmp = join(this.dir, `.${file}.tmp`); // dot files are not read by the watcher's loader
      writeFileSync(tmp, text);
      renameSync(tmp, join(this.dir, file));
      this.written.set(file, text);
    }
    for (const file of [...this.written.keys()])
      if (!seen.has(file)) {
        rmSync(join(this.dir, file), { force: true });
        this.written.delete(file);
      }
  }
}
