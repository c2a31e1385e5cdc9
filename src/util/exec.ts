// Thin helpers for running host tools (ip, nft) with errors that say what failed.
import { spawn, spawnSync } from 'node:child_process';

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')}: exit ${code}: ${stderr.trim() || '(no output)'}`);
  }
}

/** Runs a command to completion; rejects with CommandError on a non-zero exit. */
export function run(argv: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    const child = spawn(cmd!, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => reject(new CommandError(argv, null, e.message)));
    child.on('close', (code) => {
      if (code === 0 || opts.allowFail) resolve(out);
      else reject(new CommandError(argv, code, err));
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // a tool that exits before reading its input reports through its exit code
      child.stdin.end(opts.input);
    }
  });
}

/** Synchronous variant for teardown paths that must not depend on the event loop. */
export function runSync(argv: string[], opts: { input?: string } = {}): { code: number; stdout: string; stderr: string } {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd!, args, { input: opts.input ?? '', encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message || '') };
}

export function hasCommand(cmd: string): boolean {
  return runSync(['sh', '-c', `command -v ${cmd}`]).code === 0;
}
