// Kernel feature probe: does this node have everything weft's capture needs? The agent calls
// assertKernelReady() at start, so a missing feature fails loudly by name instead of as a
// confusing attach error later.
import fs from 'node:fs';
import os from 'node:os';
import { native } from './addon.ts';
import { findBpffsMount, findCgroup2Mount } from './mounts.ts';

export interface ProbeReport {
  kernel: string;
  /** cgroup v2 mount point (the connect/sockops hooks attach to pod cgroups in it). */
  cgroup2: string | undefined;
  /** bpffs mount point, if mounted (ensureBpffs() mounts it). */
  bpffs: string | undefined;
  /** Whether the kernel knows the bpf filesystem type at all. */
  bpffsSupported: boolean;
  progTypes: Record<string, boolean>;
  mapTypes: Record<string, boolean>;
  /** Attach types usable through BPF links (cgroup links 5.7, netns sk_lookup links 5.9). */
  linkAttachTypes: Record<string, boolean>;
  /** "<prog type>/<helper>" -> usable from that program type. */
  helpers: Record<string, boolean>;
  /** Human-readable names of missing features; empty when the node is ready. */
  missing: string[];
}

export function probeKernel(): ProbeReport {
  const n = native().probe();
  const cgroup2 = findCgroup2Mount();
  const bpffs = findBpffsMount();
  const bpffsSupported = /\sbpf$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'));
  const missing: string[] = [];
  if (!cgroup2) missing.push('cgroup v2 mount');
  if (!bpffsSupported) missing.push('bpf filesystem (CONFIG_BPF_SYSCALL)');
  const groups: [string, Record<string, boolean>][] = [
    ['program type', n.progTypes],
    ['map type', n.mapTypes],
    ['link attach type', n.linkAttachTypes],
    ['helper', n.helpers],
  ];
  for (const [kind, rec] of groups) for (const [name, ok] of Object.entries(rec)) if (!ok) missing.push(`${kind} ${name}`);
  return { kernel: os.release(), cgroup2, bpffs, bpffsSupported, ...n, missing };
}

/** Throws an Error naming every missing feature; returns the report otherwise. */
export function assertKernelReady(report: ProbeReport = probeKernel()): ProbeReport {
  if (report.missing.length > 0) {
    throw new Error(
      `kernel ${report.kernel} lacks what weft capture needs: ${report.missing.join(', ')} ` +
        '(weft needs Linux >= 5.10 with cgroup v2, BPF links, sk_lookup and socket storage; run as root)',
    );
  }
  return report;
}
