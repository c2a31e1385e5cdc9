// Facts about processes from /proc. A netns given as /proc/<pid>/ns/net names a process, and PIDs
// are reused: the agent records the process's start time with the PID (field 22 of
// /proc/<pid>/stat, in clock ticks since boot, unique per PID at any one time) and re-adopts a
// saved pod only when the same process still holds that PID.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The PID of a /proc/<pid>/ns/net path, or undefined for other netns paths. */
export function netnsPid(netns: string, proc = '/proc'): number | undefined {
  const m = new RegExp(`^${proc.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(\\d+)/ns/net$`).exec(netns);
  return m ? Number(m[1]) : undefined;
}

/** The start time of process `pid` (field 22 of /proc/<pid>/stat), or undefined if it is gone. */
export function procStartTime(pid: number, proc = '/proc'): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(join(proc, String(pid), 'stat'), 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields count from the
  // last ')'; the first field after it is field 3 (state).
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = rest[22 - 3];
  return start && /^\d+$/.test(start) ? start : undefined;
}
