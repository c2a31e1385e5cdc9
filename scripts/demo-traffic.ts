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

// What the node agents saw: per-pod capture counters from their BPF maps, on each node's :15020.
const nodes = (JSON.parse(weft('get', 'nodes', '-o', 'json', '--name', lab).stdout) as { items: { metadata: { name: string; annotations: Record<string, string> } }[] }).items;
for (const n of nodes) {
  const text = spawnSync('nsenter', [`--net=/run/netns/${n.metadata.annotations['weft.dev/netns']}`, 'curl', '-s', '-m', '3', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' }).stdout;
  const sum = (dir: string) =>
    [...text.matchAll(new RegExp(`^weft_pod_captured_connections_total\\{[^}]*direction="${dir}"\\} (\\d+)$`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
  const mode = /capture_mode="(\w+)"/.exec(text)?.[1] ?? '?';
  const pods = /^weft_agent_enrolled_pods (\d+)$/m.exec(text)?.[1] ?? '0';
  const mtls = [...text.matchAll(/^istio_tcp_connections_opened_total\{reporter="source",[^}]*connection_security_policy="mutual_tls"\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
  console.log(`agent on ${n.metadata.name} (${mode}): ${pods} pods enrolled, captured ${sum('outbound')} outbound and ${sum('inbound')} inbound connections; ${mtls} left the pod as mutual TLS (HBONE)`);
}
process.exitCode = failures ? 1 : 0;
