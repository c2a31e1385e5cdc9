// The plugin process: what the container runtime executes (through the wrapper `weft cni-install`
// puts in the CNI bin directory, or `weft cni-plugin`). Result on stdout, diagnostics on stderr.
import { runPlugin } from './plugin.ts';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    if (process.stdin.isTTY) return resolve('');
    let s = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d: string) => (s += d));
    process.stdin.on('end', () => resolve(s));
    process.stdin.on('error', reject);
  });
}

export async function pluginMain(): Promise<void> {
  const out = await runPlugin(process.env, await readStdin());
  for (const line of out.log) process.stderr.write(`${line}\n`);
  if (out.stdout) process.stdout.write(`${out.stdout}\n`);
  process.exitCode = out.exitCode;
}
