// Removes everything a lab created, found by name rather than by memory, so it also cleans up
// after a killed or crashed `weft up`: processes (via the lab's cgroup tree and its namespaces),
// namespaces (with their links and nft rules), /etc/netns files, cgroups, bpffs pins, state.
import { existsSync, readdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runSync } from '../util/exec.ts';
import { cgroup2Mount, findBpffsMount } from '../bpf/mounts.ts';
import type { LabLayout } from './layout.ts';
import { listNetns } from './network.ts';
import { cgroupPids } from './pod-runtime.ts';

/** Depth-first list of a cgroup directory and its descendants (children first). */
function cgroupTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    try {
      if (statSync(p).isDirectory()) out.push(...cgroupTree(p));
    } catch {}
  }
  out.push(dir);
  return out;
}

function killAll(pids: number[]) {
  for (const pid of pids)
    if (pid !== process.pid)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
}

function waitGone(check: () => boolean, ms: number) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !check()) runSync(['sleep', '0.05']);
}

export interface TeardownReport {
  netns: string[];
  cgroups: number;
  processes: number;
}

export function teardownLab(layout: LabLayout): TeardownReport {
  const report: TeardownReport = { netns: [], cgroups: 0, processes: 0 };
  let cg2: string | undefined;
  try {
    cg2 = cgroup2Mount();
  } catch {}
  const cgRoot = cg2 ? layout.cgroupRoot(cg2) : undefined;
  const tree = cgRoot ? cgroupTree(cgRoot) : [];
  // 1. Processes in the lab's cgroups (cgroup.kill reaches every descendant at once).
  for (const cg of tree) {
    const pids = cgroupPids(cg).filter((p) => p !== process.pid);
    report.processes += pids.length;
    killAll(pids);
  }
  // 2. Processes that sit in a lab namespace without being in its cgroups (e.g. a stray exec).
  const prefix = layout.netnsPrefix();
  const mine = listNetns().filter((n) => n.startsWith(prefix));
  for (const ns of mine) {
    const pids = runSync(['ip', 'netns', 'pids', ns]).stdout.split('\n').filter(Boolean).map(Number);
    report.processes += pids.length;
    killAll(pids);
  }
  waitGone(() => tree.every((cg) => cgroupPids(cg).filter((p) => p !== process.pid).length === 0), 5000);
  // 3. Namespaces: their veths, routes and nft tables go with them.
  for (const ns of mine) {
    runSync(['ip', 'netns', 'del', ns]);
    report.netns.push(ns);
  }
  if (existsSync('/etc/netns'))
    for (const e of readdirSync('/etc/netns')) if (e.startsWith(prefix)) rmSync(join('/etc/netns', e), { recursive: true, force: true });
  // 4. cgroups, children first; then the shared `weft` parent if no other lab uses it.
  for (const cg of tree)
    try {
      rmdirSync(cg);
      report.cgroups++;
    } catch {}
  if (cg2)
    try {
      rmdirSync(join(cg2, 'weft'));
    } catch {}
  // 5. bpffs pins and the state directory.
  const pins = layout.bpffsDir(findBpffsMount() ?? '/sys/fs/bpf');
  if (existsSync(pins)) rmSync(pins, { recursive: true, force: true });
  try {
    rmdirSync(join(pins, '..'));
  } catch {}
  rmSync(layout.stateDir, { recursive: true, force: true });
  return report;
}

/** True when anything of the lab still exists (a running daemon, a namespace or a cgroup). */
export function labExists(layout: LabLayout): boolean {
  const prefix = layout.netnsPrefix();
  if (listNetns().some((n) => n.startsWith(prefix))) return true;
  try {
    if (existsSync(layout.cgroupRoot(cgroup2Mount()))) return true;
  } catch {}
  return existsSync(layout.socketPath);
}
