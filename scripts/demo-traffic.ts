// Sends a burst of requests from the demo's loadgen pod to each service and prints who answered.
import { spawnSync } from 'node:child_process';

const lab = process.argv[2] ?? 'weft';
const weft = (...args: string[]) => spawnSync(process.execPath, ['bin/weft.js', ...args], { encoding: 'utf8' });
const pods = (JSON.parse(weft('get', 'pods', '-A', '-o', 'json', '--name', lab).stdout) as { items: { metadata: { name: string }; spec: { nodeName: string } }[] }).items;
const nodeOf = new Map(pods.map((p) => [p.metadata.name, p.spec.nodeName]));

const targets = ['http://web', 'http://checkout.backend', 'http://inventory.backend.svc.cluster.local'];
const N = 30;
let failures = 0;
for (const url of targets) {
  const script = `for i in $(seq ${N}); do curl -s -m 2 ${url}/ || echo '{}'; echo; done`;
  const r = weft('exec', '--name', lab, 'frontend/loadgen', '--', 'sh', '-c', script);
  const by = new Map<string, number>();
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    let pod = 'failed';
    try {
      pod = (JSON.parse(line) as { pod?: string }).pod ?? 'failed';
    } catch {}
    by.set(pod, (by.get(pod) ?? 0) + 1);
  }
  const answered = [...by].filter(([p]) => p !== 'failed').reduce((a, [, n]) => a + n, 0);
  failures += N - answered;
  if (r.status !== 0 && answered === 0) console.error(r.stderr.trim());
  console.log(`${N} requests frontend/loadgen -> ${url.replace('http://', '')}`);
  for (const [pod, n] of [...by].sort()) console.log(`   ${String(n).padStart(3)}  ${pod}${nodeOf.has(pod) ? ` (${nodeOf.get(pod)})` : ''}`);
}
console.log(failures ? `${failures} request(s) failed` : 'every request was answered; replicas on both nodes shared the load');
process.exitCode = failures ? 1 : 0;
