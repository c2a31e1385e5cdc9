// Lab commands: up, down, apply, delete, get, exec, logs (and the hidden lab-daemon).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { labCall, LabNotRunning } from '../lab/client.ts';
import { cgroup2Mount } from '../bpf/mounts.ts';
import { LabLayout } from '../lab/layout.ts';
import { formatProblem, loadManifests } from '../kube/manifest.ts';
import type { KObject, Pod, Service } from '../kube/objects.ts';
import type { ApplyOutcome } from '../lab/cluster.ts';
import { containerEnv, launchArgv } from '../lab/pod-runtime.ts';
import { labExists, teardownLab } from '../lab/teardown.ts';
import { hasCommand } from '../util/exec.ts';
import { weftBin } from '../util/paths.ts';
import { sleep } from '../util/sleep.ts';
import { age, table } from './table.ts';

const nameOpt = () => new Option('--name <name>', 'lab name').default('weft');

interface State {
  nodes: KObject[];
  pods: Pod[];
  services: Service[];
  objects: KObject[];
}

/** Root, tools and kernel features the lab needs, each named when missing. */
function preflight(): void {
  if (process.getuid?.() !== 0) throw new Error('the lab needs root (network namespaces, veths, cgroups): run as root, e.g. sudo weft up');
  for (const t of ['ip', 'nft', 'nsenter', 'sysctl'])
    if (!hasCommand(t)) throw new Error(`"${t}" is not installed (make setup installs iproute2, nftables, util-linux and procps)`);
  if (!existsSync('/proc/self/ns/net')) throw new Error('the kernel has no network namespaces (CONFIG_NET_NS)');
  const cg = cgroup2Mount();
  if (!existsSync(`${cg}/cgroup.procs`)) throw new Error(`cgroup v2 at ${cg} is not usable`);
}

function loadOrReport(files: string[]): { objects: KObject[]; bad: number } {
  const { objects, problems } = loadManifests(files);
  for (const p of problems) console.error(`error: ${formatProblem(p)}`);
  return { objects, bad: problems.length };
}

function printOutcomes(out: ApplyOutcome[]): number {
  let bad = 0;
  for (const o of out) {
    if (o.result === 'error') {
      bad++;
      console.error(`error: ${o.object}: ${o.error}`);
    } else console.log(`${o.object.toLowerCase().replace(' ', '/')} ${o.result}`);
  }
  return bad;
}

const podReady = (p: Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
const podDone = (p: Pod) => podReady(p) || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';

export function registerLabCommands(program: Command): void {
  program
    .command('up')
    .description('create a local multi-node cluster (network namespaces, veths, cgroups) and run manifests in it')
    .addOption(nameOpt())
    .option('--nodes <n>', 'number of nodes', (v) => parseInt(v, 10), 2)
    .option('-f, --filename <path...>', 'manifest files or directories', [])
    .option('--timeout <seconds>', 'how long to wait for pods to be ready', (v) => parseInt(v, 10), 180)
    .addOption(new Option('--capture <mode>', 'how node agents capture pod traffic (none: no mesh)').choices(['ebpf', 'iptables', 'none']).default('ebpf'))
    .option('--cert-ttl <seconds>', 'workload certificate lifetime (default 24h; short values show rotation)', (v) => parseInt(v, 10))
    .action(async (o: { name: string; nodes: number; filename: string[]; timeout: number; capture: string; certTtl?: number }) => {
      const layout = new LabLayout(o.name);
      preflight();
      if (labExists(layout)) throw new Error(`lab "${o.name}" already exists (weft down --name ${o.name} removes it)`);
      const { objects, bad } = loadOrReport(o.filename);
      mkdirSync(layout.stateDir, { recursive: true });
      const logFd = openSync(layout.daemonLog, 'a');
      const child = spawn(process.execPath, [weftBin, 'lab-daemon', '--name', o.name, '--nodes', String(o.nodes), '--capture', o.capture, ...(o.certTtl ? ['--cert-ttl', String(o.certTtl)] : [])], { detached: true, stdio: ['ignore', logFd, logFd] });
      closeSync(logFd);
      let exited = false;
      child.on('exit', () => (exited = true));
      child.unref();
      console.log(`lab ${o.name}: creating ${o.nodes} node(s)${o.capture === 'none' ? '' : `, node agents capturing with ${o.capture}`}`);
      const deadline = Date.now() + 60_000;
      for (;;) {
        const st = await labCall<{ ready: boolean; initError?: string }>(layout, 'GET', '/v1/status').catch(() => undefined);
        if (st?.ready) break;
        if (st?.initError || exited || Date.now() > deadline) {
          const tail = existsSync(layout.daemonLog) ? readFileSync(layout.daemonLog, 'utf8').split('\n').slice(-15).join('\n') : '';
          teardownLab(layout);
          throw new Error(`lab ${o.name} failed to start: ${st?.initError ?? (exited ? 'the lab daemon exited' : 'timed out')}\n${tail}`);
        }
        await sleep(100);
      }
      const state0 = await labCall<State>(layout, 'GET', '/v1/state');
      for (const n of state0.nodes)
        console.log(`  node ${n.metadata.name}  ${(n.status as { addresses: { address: string }[] }).addresses[0]!.address}  pods ${(n.spec as { podCIDR: string }).podCIDR}`);
      let failed = bad;
      if (objects.length) failed += printOutcomes((await labCall<{ results: ApplyOutcome[] }>(layout, 'POST', '/v1/apply', { objects })).results);
      const ok = await waitForPods(layout, o.timeout * 1000);
      console.log(ok ? `lab ${o.name} is up.` : `lab ${o.name} is up, but not every pod became ready within ${o.timeout}s.`);
      console.log(`  weft get pods -A --name ${o.name}      weft exec NS/POD --name ${o.name} -- CMD      weft down --name ${o.name}`);
      if (failed || !ok) process.exitCode = 1;
    });

  program
    .command('down')
    .description('remove everything a lab created (also after a crashed weft up)')
    .addOption(nameOpt())
    .action(async (o: { name: string }) => {
      const layout = new LabLayout(o.name);
      if (process.getuid?.() !== 0) throw new Error('weft down needs root');
      const running = await labCall(layout, 'POST', '/v1/shutdown', undefined, 5000).then(
        () => true,
        () => false,
      );
      if (running) {
        // Let the daemon stop pods gracefully; then sweep whatever remains.
        const pid = Number(readFileSync(layout.pidFile, 'utf8').trim() || 0);
        for (let i = 0; i < 300 && pid && alive(pid); i++) await sleep(100);
      }
      const r = teardownLab(layout);
      console.log(`lab ${o.name}: removed ${r.netns.length} network namespace(s), ${r.cgroups} cgroup(s)${r.processes ? `, killed ${r.processes} process(es)` : ''}`);
    });

  program
    .command('apply')
    .description('create or update objects in a running lab')
    .addOption(nameOpt())
    .requiredOption('-f, --filename <path...>', 'manifest files or directories')
    .action(async (o: { name: string; filename: string[] }) => {
      const layout = new LabLayout(o.name);
      const { objects, bad } = loadOrReport(o.filename);
      const { results } = await labCall<{ results: ApplyOutcome[] }>(layout, 'POST', '/v1/apply', { objects });
      if (printOutcomes(results) + bad) process.exitCode = 1;
    });

  program
    .command('delete')
    .description('delete objects from a running lab: -f FILES, or KIND NAME [-n NS]')
    .addOption(nameOpt())
    .option('-f, --filename <path...>', 'manifest files or directories')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .argument('[kind]')
    .argument('[names...]')
    .action(async (kind: string | undefined, names: string[], o: { name: string; filename?: string[]; namespace: string }) => {
      const layout = new LabLayout(o.name);
      let objects: { kind: string; metadata: { name: string; namespace?: string } }[];
      let bad = 0;
      if (o.filename) ({ objects, bad } = loadOrReport(o.filename));
      else if (kind && names.length) objects = names.map((n) => ({ kind: kindName(kind), metadata: { name: n, namespace: o.namespace } }));
      else throw new Error('delete needs -f FILE or KIND NAME');
      const { results } = await labCall<{ results: ApplyOutcome[] }>(layout, 'POST', '/v1/delete', { objects });
      if (printOutcomes(results) + bad) process.exitCode = 1;
    });

  program
    .command('get')
    .description('list pods, services, deployments, nodes or namespaces')
    .addOption(nameOpt())
    .argument('<resource>', 'pods | services | deployments | nodes | namespaces')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-A, --all-namespaces', 'all namespaces')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['wide', 'json']))
    .action(async (resource: string, o: { name: string; namespace: string; allNamespaces?: boolean; output?: string }) => {
      const layout = new LabLayout(o.name);
      const st = await labCall<State>(layout, 'GET', '/v1/state');
      const kind = kindName(resource);
      const inNs = (x: KObject) => o.allNamespaces || x.metadata.namespace === o.namespace;
      const items: KObject[] =
        kind === 'Node' ? st.nodes : kind === 'Pod' ? st.pods.filter(inNs) : kind === 'Service' ? st.services.filter(inNs) : st.objects.filter((x) => x.kind === kind && (kind === 'Namespace' || inNs(x)));
      if (o.output === 'json') {
        console.log(JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2));
        return;
      }
      if (items.length === 0) {
        console.log(kind === 'Node' || kind === 'Namespace' || o.allNamespaces ? 'No resources found' : `No resources found in ${o.namespace} namespace.`);
        return;
      }
      console.log(render(kind, items, st, !!o.allNamespaces, o.output === 'wide'));
    });

  program
    .command('exec')
    .description('run a command inside a pod (its network namespace, cgroup, /etc/hosts)')
    .addOption(nameOpt())
    .option('-c, --container <name>', 'container whose environment to use')
    .argument('<pod>', 'NS/POD or POD (namespace default)')
    .argument('<command...>')
    .action(async (podRef: string, command: string[], o: { name: string; container?: string }) => {
      const layout = new LabLayout(o.name);
      const [ns, name] = podRef.includes('/') ? podRef.split('/', 2) : ['default', podRef];
      const p = await labCall<{ netns: string; cgroup: string; ip: string; node: string; nodeIP: string; pod: Pod }>(
        layout,
        'GET',
        `/v1/pod?namespace=${encodeURIComponent(ns!)}&name=${encodeURIComponent(name!)}`,
      ).catch((e: Error) => {
        throw e instanceof LabNotRunning ? e : new Error(`pod ${ns}/${name}: ${e.message.replace(/^lab \S+: /, '')}`);
      });
      const c = o.container ? p.pod.spec.containers.find((x) => x.name === o.container) : p.pod.spec.containers[0];
      if (!c) throw new Error(`pod ${ns}/${name} has no container "${o.container}"`);
      const argv = launchArgv(p, command);
      const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env: containerEnv(p.pod, c, p) });
      const code = await new Promise<number>((r) => child.on('exit', (c2, sig) => r(c2 ?? (sig ? 128 : 1))));
      process.exitCode = code;
    });

  program
    .command('logs')
    .description("print a pod's output")
    .addOption(nameOpt())
    .option('-c, --container <name>', 'container (default: the first)')
    .option('-f, --follow', 'keep printing new output')
    .argument('<pod>', 'NS/POD or POD')
    .action(async (podRef: string, o: { name: string; container?: string; follow?: boolean }) => {
      const layout = new LabLayout(o.name);
      const [ns, name] = podRef.includes('/') ? podRef.split('/', 2) : ['default', podRef];
      const st = await labCall<State>(layout, 'GET', '/v1/state');
      const pod = st.pods.find((p) => p.metadata.namespace === ns && p.metadata.name === name);
      if (!pod) throw new Error(`pod ${ns}/${name} not found`);
      const c = o.container ?? pod.spec.containers[0]!.name;
      const file = layout.podLog(ns!, name!, c);
      if (o.follow) {
        const t = spawn('tail', ['-n', '+1', '-F', file], { stdio: 'inherit' });
        await new Promise((r) => t.on('exit', r));
      } else if (existsSync(file)) process.stdout.write(readFileSync(file));
    });

  program
    .command('lab-daemon', { hidden: true })
    .addOption(nameOpt())
    .option('--nodes <n>', 'number of nodes', (v) => parseInt(v, 10), 2)
    .option('--capture <mode>', 'ebpf | iptables | none', 'ebpf')
    .option('--cert-ttl <seconds>', 'workload certificate lifetime', (v) => parseInt(v, 10))
    .action(async (o: { name: string; nodes: number; capture: 'ebpf' | 'iptables' | 'none'; certTtl?: number }) => (await import('../lab/daemon.ts')).runLabDaemon(o.name, o.nodes, o.capture, o.certTtl));

  program
    .command('control-plane')
    .description('kill the control plane and keep it down, start it again, or upgrade it (a new replica with the current build, then the old one drained)')
    .addOption(nameOpt())
    .argument('<action>', 'kill | start | upgrade')
    .action(async (action: string, o: { name: string }) => {
      if (action === 'upgrade') {
        const r = await labCall<{ oldPid?: number; newPid?: number; drainMs: number }>(new LabLayout(o.name), 'POST', '/v1/control/upgrade');
        console.log(`control plane: upgraded (pid ${r.oldPid} drained in ${r.drainMs} ms; pid ${r.newPid} serves)`);
        return;
      }
      if (action !== 'kill' && action !== 'start') throw new Error('action must be kill, start or upgrade');
      await labCall(new LabLayout(o.name), 'POST', `/v1/control/${action}`);
      console.log(`control plane: ${action === 'kill' ? 'killed' : 'running'}`);
    });

  program
    .command('node-agent')
    .description("kill a node's agent and keep it down, start it again (what a dead DaemonSet pod looks like), or upgrade it: the current build takes over the running agent's sockets, which drains and exits")
    .addOption(nameOpt())
    .argument('<action>', 'kill | start | upgrade')
    .argument('<node>')
    .action(async (action: string, node: string, o: { name: string }) => {
      if (action !== 'kill' && action !== 'start' && action !== 'upgrade') throw new Error('action must be kill, start or upgrade');
      const r = await labCall<{ oldPid?: number; newPid?: number }>(new LabLayout(o.name), 'POST', `/v1/agents/${encodeURIComponent(node)}/${action}`);
      if (action === 'upgrade') console.log(`agent on ${node}: upgraded (pid ${r.oldPid ?? '-'} -> ${r.newPid ?? '-'}); the old agent drains what it relays, then exits`);
      else console.log(`agent on ${node}: ${action === 'kill' ? 'killed' : 'running'}`);
    });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const KINDS: Record<string, string> = {
  po: 'Pod', pod: 'Pod', pods: 'Pod',
  svc: 'Service', service: 'Service', services: 'Service',
  deploy: 'Deployment', deployment: 'Deployment', deployments: 'Deployment',
  no: 'Node', node: 'Node', nodes: 'Node',
  ns: 'Namespace', namespace: 'Namespace', namespaces: 'Namespace',
  sa: 'ServiceAccount', serviceaccount: 'ServiceAccount', serviceaccounts: 'ServiceAccount',
  gtw: 'Gateway', gateway: 'Gateway', gateways: 'Gateway',
  httproute: 'HTTPRoute', httproutes: 'HTTPRoute', grpcroute: 'GRPCRoute', grpcroutes: 'GRPCRoute',
  vs: 'VirtualService', virtualservice: 'VirtualService', virtualservices: 'VirtualService',
  dr: 'DestinationRule', destinationrule: 'DestinationRule', destinationrules: 'DestinationRule',
};
const kindName = (r: string) => KINDS[r.toLowerCase()] ?? r;

/** Waits until every pod is ready (or finished), printing progress as it changes. */
async function waitForPods(layout: LabLayout, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const st = await labCall<State>(layout, 'GET', '/v1/state');
    const done = st.pods.filter(podDone).length;
    const line = `  pods ready ${done}/${st.pods.length}`;
    if (line !== last) console.log(line);
    last = line;
    if (done === st.pods.length) {
      // Ready pods are endpoints only once every node agent's mesh state says so.
      const sync = await labCall<{ converged: boolean }>(layout, 'GET', '/v1/mesh-sync');
      if (sync.converged) return true;
      if (last !== 'mesh') console.log('  waiting for node agents to receive the mesh state');
      last = 'mesh';
    }
    if (Date.now() > deadline) {
      for (const p of st.pods.filter((x) => !podDone(x)))
        console.error(`  not ready: ${p.metadata.namespace}/${p.metadata.name} (${p.status?.phase ?? 'Pending'}${(p.status as { message?: string })?.message ? ': ' + (p.status as { message?: string }).message : ''})`);
      return false;
    }
    await sleep(200);
  }
}

function render(kind: string, items: KObject[], st: State, allNs: boolean, wide: boolean): string {
  const nsCol = (o: KObject) => (allNs ? [o.metadata.namespace ?? ''] : []);
  const nsHead = allNs ? ['NAMESPACE'] : [];
  switch (kind) {
    case 'Pod': {
      const rows = (items as Pod[]).map((p) => {
        const cs = p.status?.containerStatuses ?? [];
        const waiting = cs.find((c) => 'waiting' in c.state)?.state.waiting as { reason?: string } | undefined;
        return [
          ...nsCol(p),
          p.metadata.name,
          `${cs.filter((c) => c.ready).length}/${p.spec.containers.length}`,
          waiting?.reason ?? p.status?.phase ?? 'Pending',
          String(cs.reduce((a, c) => a + c.restartCount, 0)),
          age(p.metadata.creationTimestamp),
          ...(wide ? [p.status?.podIP ?? '<none>', p.spec.nodeName ?? '<none>'] : []),
        ];
      });
      return table([...nsHead, 'NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', ...(wide ? ['IP', 'NODE'] : [])], rows);
    }
    case 'Service': {
      const rows = (items as Service[]).map((s) => [
        ...nsCol(s),
        s.metadata.name,
        'ClusterIP',
        s.spec.clusterIP ?? 'None',
        s.spec.ports.map((p) => `${p.port}/TCP`).join(','),
        age(s.metadata.creationTimestamp),
        ...(wide ? [Object.entries(s.spec.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>'] : []),
      ]);
      return table([...nsHead, 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)', 'AGE', ...(wide ? ['SELECTOR'] : [])], rows);
    }
    case 'Node': {
      const rows = items.map((n) => [
        n.metadata.name,
        'Ready',
        (n.status as { addresses: { address: string }[] }).addresses[0]!.address,
        (n.spec as { podCIDR: string }).podCIDR,
        String(st.pods.filter((p) => p.spec.nodeName === n.metadata.name).length),
        ...(wide ? [n.metadata.annotations?.['weft.dev/netns'] ?? ''] : []),
      ]);
      return table(['NAME', 'STATUS', 'INTERNAL-IP', 'POD-CIDR', 'PODS', ...(wide ? ['NETNS'] : [])], rows);
    }
    case 'Deployment': {
      const rows = items.map((d) => {
        const mine = st.pods.filter((p) => p.metadata.namespace === d.metadata.namespace && p.metadata.ownerReferences?.[0]?.uid === d.metadata.uid);
        const want = (d.spec as { replicas?: number }).replicas ?? 1;
        return [...nsCol(d), d.metadata.name, `${mine.filter(podReady).length}/${want}`, String(mine.length), String(mine.filter(podReady).length), age(d.metadata.creationTimestamp)];
      });
      return table([...nsHead, 'NAME', 'READY', 'UP-TO-DATE', 'AVAILABLE', 'AGE'], rows);
    }
    case 'Namespace':
      return table(['NAME', 'STATUS', 'LABELS'], items.map((n) => [n.metadata.name, 'Active', Object.entries(n.metadata.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>']));
    default:
      return table([...nsHead, 'NAME', 'AGE'], items.map((x) => [...nsCol(x), x.metadata.name, age(x.metadata.creationTimestamp)]));
  }
}
