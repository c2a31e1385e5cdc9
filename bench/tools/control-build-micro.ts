// The control plane's work for one pod change, stage by stage, in one process and without
// agents: directory reload, analysis, workload-API publish (the store diff), Envoy publish.
//   node --import tsx bench/tools/control-build-micro.ts   (BENCH_SCALE_NS=100 namespaces of 100 pods)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Analyzer } from '../../src/control/analyze.ts';
import { DirSource } from '../../src/control/config/dir-source.ts';
import { DEFAULT_MESH } from '../../src/control/model/networking/workloads.ts';
import { EnvoyPublisher } from '../../src/control/xds/envoy/build.ts';
import { ResourceStore } from '../../src/control/xds/resources.ts';
import { WorkloadApiPublisher } from '../../src/control/xds/workload-api.ts';

const NS = Number(process.env.BENCH_SCALE_NS ?? 100);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 30);
const dir = mkdtempSync(join(tmpdir(), 'weft-build-micro-'));

function nsYaml(n: number, readyFlip = -1): string {
  const ns = `team-${n}`;
  const out: unknown[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { 'istio.io/dataplane-mode': 'ambient' } } }];
  for (let s = 0; s < 10; s++) out.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${s}`, namespace: ns }, spec: { clusterIP: `10.96.${n}.${s + 1}`, selector: { app: `svc-${s}` }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  for (let p = 0; p < 100; p++)
    out.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `pod-${p}`, namespace: ns, labels: { app: `svc-${p % 10}` } },
      spec: { nodeName: `node-${p % 50}`, containers: [{ name: 'app', image: 'app', ports: [{ containerPort: 8080 }] }] },
      status: { phase: 'Running', podIP: `10.${100 + Math.floor(n / 2)}.${(n % 2) * 128 + Math.floor(p / 2)}.${(p % 2) + 2}`, conditions: [{ type: 'Ready', status: p === readyFlip ? 'False' : 'True' }] },
    });
  for (let a = 0; a < 5; a++)
    out.push({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: `allow-${a}`, namespace: ns }, spec: { selector: { matchLabels: { app: `svc-${a}` } }, action: 'ALLOW', rules: [{ from: [{ source: { namespaces: [ns] } }] }] } });
  return out.map((o) => stringify(o)).join('---\n');
}

try {
  for (let n = 0; n < NS; n++) writeFileSync(join(dir, `team-${n}.yaml`), nsYaml(n));
  const source = new DirSource(dir);
  const store = new ResourceStore();
  const publisher = new WorkloadApiPublisher(store);
  const envoy = new EnvoyPublisher(store);
  const analyzer = new Analyzer({ ...DEFAULT_MESH });
  const stages = { reload: [] as number[], analyze: [] as number[], workloadApi: [] as number[], envoy: [] as number[] };
  let t = performance.now();
  let timing = false;
  source.on('update', (snap) => {
    const t1 = performance.now();
    const a = analyzer.run(snap);
    const t2 = performance.now();
    publisher.publish(a.model);
    const t3 = performance.now();
    envoy.publish(a.envoy);
    const t4 = performance.now();
    if (timing) {
      stages.reload.push(t1 - t);
      stages.analyze.push(t2 - t1);
      stages.workloadApi.push(t3 - t2);
      stages.envoy.push(t4 - t3);
    }
  });
  source.start();
  const texts = [nsYaml(7, 3), nsYaml(7)];
  timing = true;
  for (let r = 0; r < ROUNDS; r++) {
    writeFileSync(join(dir, 'team-7.yaml'), texts[r % 2]!);
    t = performance.now();
    source.reload();
  }
  source.close();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const total = stages.reload.map((_, i) => stages.reload[i]! + stages.analyze[i]! + stages.workloadApi[i]! + stages.envoy[i]!);
  console.log(Object.fromEntries([...Object.entries(stages), ['total', total]].map(([k, v]) => [k, { median: +median(v as number[]).toFixed(1), max: +Math.max(...(v as number[])).toFixed(1) }])));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
