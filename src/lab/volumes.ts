// A pod's volumes, as a kubelet provides them: each volume a directory of the pod's state
// (emptyDir; configMap keys as files; projected service-account tokens from the control plane,
// as the API server's TokenRequest would give them), and each container's volumeMounts bound at
// their paths inside the container's own mount namespace (the one `ip netns exec` makes), so
// nothing of it is seen on the machine. Paths under /run (and /var/run, its link) land in a fresh
// tmpfs that replaces /run for that container only: a pod has its own /run on a node too.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import type { Container, Pod, Volume } from '../kube/objects.ts';

export interface VolumeSources {
  /** A token for the pod's service account with this audience. */
  token(namespace: string, serviceAccount: string, audience: string | undefined): string;
  /** A ConfigMap's data, or undefined when there is none by that name. */
  configMap(namespace: string, name: string): Record<string, string> | undefined;
}

export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

const safeFile = (path: string) => {
  const n = normalize(path);
  if (n.startsWith('/') || n.startsWith('..')) throw new Error(`path ${JSON.stringify(path)} must stay inside its volume`);
  return n;
};

function writeInto(dir: string, rel: string, data: string): void {
  const file = join(dir, safeFile(rel));
  mkdirSync(dirname(file), { recursive: true });
  // Replaced whole, as the kubelet's atomic writer does: a reader never sees half a token.
  writeFileSync(`${file}.tmp`, data, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

function configMapInto(dir: string, ns: string, cm: { name: string; items?: { key: string; path: string }[]; optional?: boolean }, src: VolumeSources, at: string): void {
  const data = src.configMap(ns, cm.name);
  if (!data) {
    if (cm.optional) return;
    throw new Error(`${at}: configmap "${cm.name}" not found in namespace "${ns}"`);
  }
  const items = cm.items ?? Object.keys(data).map((key) => ({ key, path: key }));
  for (const it of items) {
    if (data[it.key] === undefined) throw new Error(`${at}: configmap "${cm.name}" has no key "${it.key}"`);
    writeInto(dir, it.path, data[it.key]!);
  }
}

/** Fills every volume of the pod under `root` (one directory per volume); throws naming the volume. */
export function prepareVolumes(pod: Pod, root: string, src: VolumeSources): Map<string, string> {
  const ns = pod.metadata.namespace ?? 'default';
  const sa = pod.spec.serviceAccountName ?? 'default';
  const dirs = new Map<string, string>();
  for (const v of pod.spec.volumes ?? ([] as Volume[])) {
    const dir = join(root, v.name);
    const at = `spec.volumes[${v.name}]`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (v.configMap) configMapInto(dir, ns, v.configMap, src, `${at}.configMap`);
    for (const [i, p] of (v.projected?.sources ?? []).entries()) {
      if (p.serviceAccountToken) writeInto(dir, p.serviceAccountToken.path, src.token(ns, sa, p.serviceAccountToken.audience));
      else if (p.configMap) configMapInto(dir, ns, p.configMap, src, `${at}.projected.sources[${i}].configMap`);
    }
    dirs.set(v.name, dir);
  }
  return dirs;
}

export function removeVolumes(root: string): void {
  rmSync(root, { recursive: true, force: true });
}

/** A container's mounts, from its volumeMounts and the pod's prepared volumes. */
export function containerMounts(c: Container, dirs: ReadonlyMap<string, string>): Mount[] {
  return (c.volumeMounts ?? []).map((m) => {
    const source = dirs.get(m.name);
    if (!source) throw new Error(`container ${c.name}: volumeMounts ${m.name}: no such volume`);
    return { source, target: normalize(m.mountPath).replace(/^\/var\/run(?=\/|$)/, '/run'), readOnly: m.readOnly === true };
  });
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The argv that binds `mounts` and then execs `argv`; run inside the container's private mount
 * namespace. Targets under /run are prepared in a tmpfs at `stage` and moved onto /run last,
 * because the sources themselves live under /run on this machine.
 */
export function mountArgv(mounts: readonly Mount[], stage: string, argv: string[], keepVisible: readonly string[] = []): string[] {
  if (!mounts.length) return argv;
  const lines = ['set -e'];
  // A pod here shares the machine's filesystem: a mount over the directory weft or node runs from
  // (a checkout under /tmp, and a pod asking for an emptyDir at /tmp) would hide the container's own
  // program. Such a mount is left out, and the container's log says so.
  const hides = (m: Mount) => keepVisible.find((p) => p === m.target || p.startsWith(`${m.target}/`));
  for (const m of mounts) {
    const hidden = hides(m);
    if (hidden) lines.push(`echo ${q(`weft: volume at ${m.target} not mounted: it would hide ${hidden}, which this lab runs from`)} >&2`);
  }
  mounts = mounts.filter((m) => !hides(m));
  const bind = (src: string, dst: string, ro: boolean) => {
    lines.push(`mount -n --bind ${q(src)} ${q(dst)}`);
    if (ro) lines.push(`mount -n -o remount,bind,ro ${q(dst)}`);
  };
  const underRun = mounts.filter((m) => m.target === '/run' || m.target.startsWith('/run/'));
  if (underRun.length) {
    lines.push(`mkdir -p ${q(stage)}`);
    lines.push(`mount -n -t tmpfs -o mode=0755,size=16m weft-pod-run ${q(stage)}`);
    for (const m of underRun) {
      const dst = join(stage, m.target.slice('/run'.length));
      lines.push(`mkdir -p ${q(dst)}`);
      bind(m.source, dst, m.readOnly);
    }
  }
  for (const m of mounts) if (!underRun.includes(m) && m.target !== '/') bind(m.source, m.target, m.readOnly);
  if (underRun.length) lines.push(`mount -n --move ${q(stage)} /run`);
  lines.push('exec "$@"');
  return ['sh', '-c', lines.join('\n'), 'weft-mounts', ...argv];
}
