// Finding (never assuming) where cgroup v2 and bpffs are mounted, and cgroup ids. Hosts differ:
// unified (/sys/fs/cgroup), hybrid (/sys/fs/cgroup/unified), bpffs mounted or not.
import fs from 'node:fs';
import path from 'node:path';
import { native } from './addon.ts';

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Parses /proc/self/mountinfo (fields after " - " are fstype, source, super options). */
export function readMounts(file = '/proc/self/mountinfo'): MountEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const mountPoint = pre.split(' ')[4];
    const [fsType, source] = post.split(' ');
    if (mountPoint && fsType) out.push({ mountPoint: unescape(mountPoint), fsType, source: source ?? '' });
  }
  return out;
}

/** The cgroup v2 mount point, or undefined. Prefers the shallowest one. */
export function findCgroup2Mount(): string | undefined {
  return readMounts()
    .filter((m) => m.fsType === 'cgroup2')
    .map((m) => m.mountPoint)
    .sort((a, b) => a.length - b.length)[0];
}

/** The cgroup v2 mount point; throws if cgroup v2 is not mounted (the connect hooks need it). */
export function cgroup2Mount(): string {
  const m = findCgroup2Mount();
  if (!m) throw new Error('cgroup v2 is not mounted: mount it (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with a unified/hybrid cgroup layout');
  return m;
}

/** A bpffs mount point, preferring /sys/fs/bpf, or undefined. */
export function findBpffsMount(): string | undefined {
  const all = readMounts().filter((m) => m.fsType === 'bpf').map((m) => m.mountPoint);
  return all.includes('/sys/fs/bpf') ? '/sys/fs/bpf' : all[0];
}

/** Returns a bpffs mount point, mounting bpffs at `mountPoint` if none is mounted. */
export function ensureBpffs(mountPoint = '/sys/fs/bpf'): string {
  const existing = findBpffsMount();
  if (existing) return existing;
  fs.mkdirSync(mountPoint, { recursive: true });
  native().mountBpffs(mountPoint);
  return mountPoint;
}

/** The id bpf_get_current_cgroup_id() reports for tasks in this cgroup v2 directory. */
export function cgroupId(cgroupPath: string): bigint {
  return native().cgroupId(cgroupPath);
}

/** The cgroup directory and all its descendants (containers live in sub-cgroups of a pod). */
export function cgroupSubtree(cgroupPath: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    out.push(dir);
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // removed while walking
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  if (fs.existsSync(cgroupPath)) walk(cgroupPath);
  return out;
}
