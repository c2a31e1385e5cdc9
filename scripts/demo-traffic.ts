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

// What the node agents saw, from each node's :15020: every connection an agent carried (one per
// access-log line, HBONE arriving on 15008 included) and what the kernel captured in its pods.
const nodes = (JSON.parse(weft('get', 'nodes', '-o', 'json', '--name', lab).stdout) as { items: { metadata: { name: string; annotations: Record<string, string> } }[] }).items;
const NAMES: Record<string, string> = { hbone: 'HBONE', node_local: 'node-local', tcp: 'plaintext' };
for (const n of nodes) {
  const text = spawnSync('nsenter', [`--net=/run/netns/${n.metadata.annotations['weft.dev/netns']}`, 'curl', '-s', '-m', '3', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' }).stdout;
  const captured = (dir: string) =>
    [...text.matchAll(new RegExp(`^weft_pod_captured_connections_total\\{[^}]*direction="${dir}"\\} (\\d+)$`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
  const carried = [...text.matchAll(/^weft_agent_connections_total\{direction="(\w+)",protocol="(\w+)",result="\w+"\} (\d+)$/gm)];
  const conns = (dir: string) => {
    const by = new Map<string, number>();
    for (const [, d, p, v] of carried) if (d === dir) by.set(p!, (by.get(p!) ?? 0) + Number(v));
    const total = [...by.values()].reduce((a, b) => a + b, 0);
    const parts = [...by].filter(([, v]) => v > 0).map(([p, v]) => `${v} ${NAMES[p] ?? p}`);
    return `${total} ${dir}${parts.length ? ` (${parts.join(', ')})` : ''}`;
  };
  const mode = /capture_mode="(\w+)"/.exec(text)?.[1] ?? '?';
  const pods = /^weft_agent_enrolled_pods (\d+)$/m.exec(text)?.[1] ?? '0';
  console.log(`agent on ${n.metadata.name} (${mode}): ${pods} pods enrolled; carried ${conns('inbound')} and ${conns('outbound')} connections; its kernel capture took ${captured('outbound')} outbound and ${captured('inbound')} inbound`);
}
process.exitCode = failures ? 1 : 0;
