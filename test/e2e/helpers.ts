// Shared plumbing for lab scenarios: run the real CLI, unique lab names, and a check that a lab
// left nothing behind.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cgroup2Mount } from '../../src/bpf/mounts.ts';

export const BIN = fileURLToPath(new URL('../../bin/weft.js', import.meta.url));

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function weft(args: string[], timeoutMs = 240_000): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** Lab names start with `weft-` so leftovers are easy to spot on the machine. */
export const labName = (tag: string) => `weft-${tag}-${randomBytes(2).toString('hex')}`;

/** Runs `cmd` in a pod and returns stdout; throws with the output when it fails. */
export function podExec(lab: string, pod: string, cmd: string[]): string {
  const r = weft(['exec', '--name', lab, pod, '--', ...cmd], 30_000);
  if (r.code !== 0) throw new Error(`exec ${pod} ${cmd.join(' ')}: exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Fetches from an echo server inside the lab and returns which pod answered. */
export function curlFrom(lab: string, pod: string, url: string): { pod: string; client: string } {
  return JSON.parse(podExec(lab, pod, ['curl', '-sf', '-m', '5', '--retry', '3', '--retry-connrefused', '--retry-delay', '1', url])) as { pod: string; client: string };
}

export function getJson<T = { metadata: { name: string; namespace?: string }; spec: Record<string, unknown>; status: Record<string, unknown> }>(
  lab: string,
  what: string,
  ns = '-A',
): T[] {
  const r = weft(['get', what, '--name', lab, ...(ns === '-A' ? ['-A'] : ['-n', ns]), '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { items: T[] }).items;
}

/** Everything of the lab that would still exist on the machine. */
export function leftovers(lab: string): string[] {
  const out: string[] = [];
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`${lab}.`));
  out.push(...ns.map((n) => `netns ${n}`));
  if (existsSync('/etc/netns')) out.push(...readdirSync('/etc/netns').filter((e) => e.startsWith(`${lab}.`)).map((e) => `/etc/netns/${e}`));
  const cg = join(cgroup2Mount(), 'weft', lab);
  if (existsSync(cg)) out.push(`cgroup ${cg}`);
  if (existsSync(`/run/weft/${lab}`)) out.push(`state /run/weft/${lab}`);
  if (existsSync(`/sys/fs/bpf/weft/${lab}`)) out.push(`bpffs /sys/fs/bpf/weft/${lab}`);
  const procs = spawnSync('pgrep', ['-af', `--name ${lab}( |$)`], { encoding: 'utf8' }).stdout.trim();
  if (procs) out.push(`processes ${procs}`);
  return out;
}

/** Polls `f` every `everyMs` until it holds; throws naming `what` after `ms` (a bounded wait). */
export async function until(f: () => boolean, ms: number, what: string, everyMs = 250): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
