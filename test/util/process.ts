// Ending a process a test started: SIGTERM, then SIGKILL after 5 s, and wait for the exit, so no
// port stays bound and nothing outlives the test.
import type { ChildProcess } from 'node:child_process';

export async function stopProcess(cp: ChildProcess): Promise<void> {
  if (cp.exitCode !== null || cp.signalCode !== null) return;
  const exited = new Promise<void>((r) => cp.once('exit', () => r()));
  cp.kill('SIGTERM');
  const timer = setTimeout(() => cp.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}
