// Which cgroup v2 directory is a pod's, as the CNI plugin must tell the agent (the agent attaches
// its connect/sockops hooks there, and containers live in sub-cgroups of it).
//
// CNI ADD runs after the kubelet created the pod-level cgroup (it does so before asking the runtime
// for the sandbox) but usually before any container process exists, so the cgroup is derived from
// the pod UID under the kubelet's kubepods tree. Both kubelet cgroup drivers are understood:
//   cgroupfs: <root>/[<cgroup-root>/]kubepods[/burstable|/besteffort]/pod<uid>
//   systemd:  <root>/[<p>.slice/]<p->kubepods.slice[/<p->kubepods-<qos>.slice]/<p->kubepods[-<qos>]-pod<uid_with_underscores>.slice
//             (<p> a --cgroup-root slice such as kind's kubelet.slice)
// When the runtime gives the netns as /proc/<pid>/ns/net, that process's cgroup decides instead.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { readMounts } from '../bpf/mounts.ts';

export interface CgroupQuery {
  uid: string;
  /** The CNI_NETNS path; /proc/<pid>/ns/net lets the pid's cgroup decide. */
  netns?: string;
  /** The cgroup v2 mount; found in mountinfo when unset. */
  root?: string;
  /** /proc, for tests. */
  proc?: string;
}

/** The directory names a pod's cgroup can have, for both drivers and every QoS class. */
export function podCgroupNames(uid: string): RegExp {
  const dashed = uid.replace(/[^A-Za-z0-9-]/g, '');
  const underscored = dashed.replace(/-/g, '_');
  return new RegExp(`^(pod${dashed}|([a-z0-9_]+-)*kubepods(-[a-z]+)?-pod${underscored}\\.slice)$`);
}

export function cgroup2Root(mountinfo?: string): string {
  const m = readMounts(mountinfo)
    .filter((e) => e.fsType === 'cgroup2')
    .map((e) => e.mountPoint)
    .sort((a, b) => a.length - b.length)[0];
  if (!m) throw new Error('cgroup v2 is not mounted on this node: weft needs the unified (or hybrid) cgroup hierarchy');
  return m;
}

const MAX_DEPTH = 6;

export function resolvePodCgroup(q: CgroupQuery): string {
  const root = q.root ?? cgroup2Root();
  const names = podCgroupNames(q.uid);
  const pid = /^\/proc\/(\d+)\/ns\/net$/.exec(q.netns ?? '')?.[1];
  if (pid) {
    const line = readFileSync(join(q.proc ?? '/proc', pid, 'cgroup'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'));
    if (line) {
      // The sandbox's own cgroup; the pod's is the ancestor named after the pod UID.
      for (let dir = join(root, line.slice(3)); dir.length > root.length; dir = dirname(dir)) {
        if (names.test(basename(dir))) return dir;
      }
    }
  }
  // Breadth first from the root, descending only into the kubelet's trees (kubepods*, and the
  // slices or directories a --cgroup-root may put above them), a few levels deep.
  let level = [root];
  for (let depth = 0; depth < MAX_DEPTH && level.length; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries;
      try {
        entries = readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        if (names.test(e.name)) return join(dir, e.name);
        const insideKubepods = dir.includes('kubepods');
        // Within kubepods only the QoS levels matter; above it, any slice or the kubelet's own dirs.
        if (insideKubepods ? /(^|-)(burstable|besteffort)(\.slice)?$/.test(e.name) : /kubepods|kubelet|\.slice$/.test(e.name)) next.push(join(dir, e.name));
      }
    }
    level = next;
  }
  const hint = existsSync(join(root, 'kubepods')) || existsSync(join(root, 'kubepods.slice')) ? '' : ` (no kubepods tree under ${root}: is the kubelet using cgroup v2, or on a hybrid host the systemd driver? set "cgroupRoot" in the weft-cni configuration if cgroup v2 is elsewhere)`;
  throw new Error(`cgroup of pod ${q.uid} not found under ${root}: looked for kubepods*/…/pod${q.uid} and kubepods*.slice/…-pod${q.uid.replace(/-/g, '_')}.slice${hint}`);
}
