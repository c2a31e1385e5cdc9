import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Command } from 'commander';
import { AuthorizationPolicy } from '@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy';
import { PeerAuthentication } from '@kubernetes-models/istio/security.istio.io/v1beta1/PeerAuthentication';
import { DestinationRule } from '@kubernetes-models/istio/networking.istio.io/v1beta1/DestinationRule';
import { ServiceEntry } from '@kubernetes-models/istio/networking.istio.io/v1beta1/ServiceEntry';
import { VirtualService } from '@kubernetes-models/istio/networking.istio.io/v1alpha3/VirtualService';
import { WorkloadEntry } from '@kubernetes-models/istio/networking.istio.io/v1beta1/WorkloadEntry';
import { RequestAuthentication } from '@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication';
import { Telemetry } from '@kubernetes-models/istio/telemetry.istio.io/v1alpha1/Telemetry';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { registerAgentCommand } from '../../src/cli/agent.ts';
import { registerCniCommands } from '../../src/cli/cni.ts';
import { registerControlCommand } from '../../src/cli/control.ts';
import { DEFAULTS, resolveOptions } from '../../src/install/options.ts';
import { BASE_FILES, renderFiles, renderStream } from '../../src/install/render.ts';
import { checkInvariants, containersOf, podSpecOf, validateSchema } from './validate.ts';

type Obj = Parameters<typeof validateSchema>[0];
const repo = join(import.meta.dirname, '..', '..');
const committed = join(repo, 'daemonset');
const all = (opts = {}) => renderFiles(resolveOptions(opts)).flatMap((f) => f.objects as Obj[]);
const find = (objs: Obj[], kind: string, name?: string) => objs.find((o) => o.kind === kind && (!name || o.metadata?.name === name))!;
const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));

describe('weft install: rendered manifests', () => {
  it('daemonset/ is exactly the rendering with the defaults (regenerate: weft install -o daemonset)', () => {
    const files = renderFiles(resolveOptions());
    for (const f of files) expect(readFileSync(join(committed, f.path), 'utf8'), f.path).toBe(f.content);
    const yamlOnDisk = walk(committed).map((p) => relative(committed, p)).filter((p) => /\.ya?ml$/.test(p)).sort();
    expect(yamlOnDisk).toEqual(files.map((f) => f.path).sort());
  });

  it('the committed YAML parses back to the rendered objects', () => {
    for (const f of renderFiles(resolveOptions())) {
      const docs = parseAllDocuments(readFileSync(join(committed, f.path), 'utf8'));
      for (const d of docs) expect(d.errors, f.path).toEqual([]);
      expect(docs.map((d) => d.toJS() as unknown)).toEqual(f.objects);
    }
  });

  for (const [label, opts] of [
    ['defaults', {}],
    ['plugged CA in another namespace', { namespace: 'mesh', caSource: 'plugged', cacertsSecret: 'my-ca', trustDomain: 'example.org', image: 'registry.example/weft:1.2.3' }],
    ['plaintext xDS', { plaintextXds: true }],
  ] as const) {
    it(`every object validates against its Kubernetes schema (${label})`, () => {
      const objs = all(opts);
      expect(objs.length).toBeGreaterThan(15);
      for (const o of objs) validateSchema(o);
      expect(checkInvariants(objs)).toEqual([]);
    });
  }

  it('a broken object fails validation (the checks can fail)', () => {
    const ds = structuredClone(find(all(), 'DaemonSet'));
    podSpecOf(ds)!.containers[0]!.ports![0]!.containerPort = 'fifteen-thousand-twenty' as unknown as number;
    expect(() => validateSchema(ds)).toThrow(/DaemonSet istio-system\/weft-agent: .*containerPort/);

    const svc = structuredClone(find(all(), 'Service'));
    (svc.spec as { ports: { port: number }[] }).ports[0]!.port = 70_000;
    expect(checkInvariants([...all().filter((o) => o.kind !== 'Service'), svc])).toEqual([expect.stringMatching(/Service weft-control: port grpc-xds-tls: 70000/)]);

    const dep = structuredClone(find(all(), 'Deployment'));
    podSpecOf(dep)!.containers[0]!.volumeMounts!.push({ name: 'nowhere', mountPath: '/x' });
    expect(checkInvariants([...all().filter((o) => o.kind !== 'Deployment'), dep]).join('\n')).toMatch(/mount nowhere names no volume/);

    expect(() => validateSchema({ apiVersion: 'example.com/v1', kind: 'Widget' })).toThrow(/no schema known/);
  });

  it('the kustomizations list every file of their directory', () => {
    const files = renderFiles(resolveOptions());
    const k = files.find((f) => f.path === 'kustomization.yaml')!.objects[0] as unknown as { resources: string[] };
    expect(k.resources).toEqual([...BASE_FILES]);
    expect(k.resources.sort()).toEqual(readdirSync(committed).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort());
    const w = files.find((f) => f.path === 'waypoint/kustomization.yaml')!.objects[0] as unknown as { resources: string[] };
    expect(w.resources).toEqual(readdirSync(join(committed, 'waypoint')).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml'));
  });

  it('--namespace moves everything, including names derived from it', () => {
    const objs = all({ namespace: 'mesh' });
    const namespaced = objs.filter((o) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'Kustomization', 'Gateway'].includes(o.kind));
    expect(namespaced.length).toBeGreaterThanOrEqual(5);
    for (const o of namespaced) expect(o.metadata?.namespace, `${o.kind} ${o.metadata?.name}`).toBe('mesh');
    expect(find(objs, 'Namespace').metadata?.name).toBe('mesh');
    for (const b of objs.filter((o) => o.kind === 'ClusterRoleBinding')) for (const s of b.subjects as { namespace: string }[]) expect(s.namespace).toBe('mesh');
    expect(renderStream(resolveOptions({ namespace: 'mesh' }))).not.toContain('istio-system');
    const agentArgs = podSpecOf(find(objs, 'DaemonSet'))!.containers[0]!.args!;
    expect(agentArgs.join(' ')).toContain('--xds-address weft-control.mesh.svc:15012 --control-server-name weft-control.mesh.svc');
    expect(agentArgs.join(' ')).toContain('--root-namespace mesh');
    expect(podSpecOf(find(objs, 'Deployment'))!.containers[0]!.args!.join(' ')).toContain('--server-name weft-control.mesh.svc');
  });

  it('--image, --trust-domain and --ca-source change what they should', () => {
    const objs = all({ image: 'registry.example/weft:9', trustDomain: 'corp.example', caSource: 'plugged', cacertsSecret: 'corp-ca' });
    const containers = objs.flatMap(containersOf);
    expect(containers.length).toBe(4);
    for (const c of containers) expect(c.image, c.name).toBe('registry.example/weft:9');
    const args = (name: string) => containers.find((c) => c.name === name)!.args!.join(' ');
    expect(args('agent')).toContain('--trust-domain corp.example');
    expect(args('control')).toContain('--trust-domain corp.example');
    expect(args('control')).toContain('--ca-dir /etc/cacerts');
    const dep = podSpecOf(find(objs, 'Deployment'))!;
    expect(dep.volumes!.find((v) => v.name === 'cacerts')!.secret).toMatchObject({ secretName: 'corp-ca', optional: false });
    // Self-signed: nothing mounted; the root is kept in the Secret istio-ca-secret (read through the API).
    expect(podSpecOf(find(all(), 'Deployment'))!.volumes!.find((v) => v.name === 'cacerts')).toBeUndefined();
    expect(renderStream(resolveOptions())).not.toContain('corp');
  });

  it('plaintext xDS (15010) is off unless --plaintext-xds asks for it', () => {
    const ports = (objs: Obj[]) => ({
      service: (find(objs, 'Service').spec as { ports: { port: number }[] }).ports.map((p) => p.port),
      container: podSpecOf(find(objs, 'Deployment'))!.containers[0]!.ports!.map((p) => p.containerPort),
      args: podSpecOf(find(objs, 'Deployment'))!.containers[0]!.args!.join(' '),
    });
    const off = ports(all());
    expect(off.service).not.toContain(15010);
    expect(off.container).not.toContain(15010);
    expect(off.args).toContain('--no-plain-address');
    expect(off.args).not.toContain('15010');
    const on = ports(all({ plaintextXds: true }));
    expect(on.service).toContain(15010);
    expect(on.container).toContain(15010);
    expect(on.args).toContain('--plain-address 0.0.0.0:15010');
    expect(renderFiles(resolveOptions({ plaintextXds: true }))[0]!.content).toContain('weft install --plaintext-xds -o DIR');
  });

  it('rejects options Kubernetes would reject, naming the flag', () => {
    expect(() => resolveOptions({ namespace: 'Istio_System' })).toThrow(/--namespace/);
    expect(() => resolveOptions({ trustDomain: 'spiffe://x' })).toThrow(/--trust-domain/);
    expect(() => resolveOptions({ cniBinDir: 'opt/cni/bin' })).toThrow(/--cni-bin-dir/);
  });

  it('every container command line is accepted by the weft command it runs', () => {
    const objs = all();
    for (const c of objs.flatMap(containersOf).filter((c) => c.args)) {
      const program = new Command();
      registerAgentCommand(program);
      registerControlCommand(program);
      registerCniCommands(program);
      const [name, ...args] = c.args!;
      const sub = program.commands.find((s) => s.name() === name);
      expect(sub, `container ${c.name}: weft ${name}`).toBeDefined();
      sub!.exitOverride();
      const parsed = sub!.parseOptions(args);
      expect(parsed, `container ${c.name}`).toEqual({ operands: [], unknown: [] });
      for (const opt of sub!.options.filter((o) => o.mandatory)) expect(sub!.getOptionValue(opt.attributeName()), `${c.name}: ${opt.long}`).toBeDefined();
    }
  });

  it('the agent: every node, capabilities instead of privileged, the mounts capture needs', () => {
    const ds = find(all(), 'DaemonSet');
    const pod = podSpecOf(ds)!;
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.hostPID).toBe(true);
    const agentC = pod.containers.find((c) => c.name === 'agent')!;
    expect(agentC.securityContext?.privileged).toBe(false);
    expect(agentC.securityContext?.capabilities?.add).toEqual(expect.arrayContaining(['BPF', 'NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE', 'NET_RAW']));
    // The API refuses allowPrivilegeEscalation=false together with SYS_ADMIN.
    expect(agentC.securityContext?.allowPrivilegeEscalation).toBeUndefined();
    const mounts = Object.fromEntries(agentC.volumeMounts!.map((m) => [m.mountPath, m]));
    for (const p of ['/sys/fs/bpf', '/sys/fs/cgroup', '/var/run/netns', '/var/run/weft', '/var/run/secrets/istio', '/var/run/secrets/tokens']) expect(mounts[p], p).toBeDefined();
    expect(mounts['/var/run/netns']!.mountPropagation).toBe('HostToContainer');
    const token = pod.volumes!.find((v) => v.name === 'weft-token')!.projected!.sources![0]!.serviceAccountToken!;
    expect(token).toMatchObject({ audience: 'istio-ca', path: 'istio-token' });
    expect(agentC.args!.join(' ')).toContain('--token-file /var/run/secrets/tokens/istio-token');
    expect(agentC.readinessProbe?.httpGet).toMatchObject({ path: '/healthz/ready', port: 15021 });
    expect((ds.spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '15020' });
    // The API token only where it is used: the agent (annotations, reconcile at start) and the CNI installer.
    expect(pod.automountServiceAccountToken).toBe(false);
    const withApi = containersOf(ds).filter((c) => c.volumeMounts?.some((m) => m.mountPath === '/var/run/secrets/kubernetes.io/serviceaccount'));
    expect(withApi.map((c) => c.name)).toEqual(['agent', 'cni-install']);
    expect(agentC.args).toContain('--in-cluster');
  });

  it('the agent rolls hitlessly: a new pod beside the old on each node, the handover socket on a hostPath, time to drain', () => {
    const ds = find(all(), 'DaemonSet');
    expect((ds.spec as { updateStrategy: unknown }).updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const pod = podSpecOf(ds)!;
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(600);
    const agentC = pod.containers.find((c) => c.name === 'agent')!;
    const stateDir = agentC.args![agentC.args!.indexOf('--state-dir') + 1]!;
    // handover.sock lives in the state dir: both agent pods of a node must see the same one.
    const mount = agentC.volumeMounts!.find((m) => stateDir.startsWith(m.mountPath + '/'))!;
    expect(pod.volumes!.find((v) => v.name === mount.name)!.hostPath?.path).toBe(mount.mountPath);
  });

  it('--pod-cidrs gives the agents the pod network (WEFT_POD_CIDRS); off by default; a bad entry is named', () => {
    const env = (o = {}) => podSpecOf(find(all(o), 'DaemonSet'))!.containers.find((c) => c.name === 'agent')!.env ?? [];
    expect(env().find((e) => e.name === 'WEFT_POD_CIDRS')).toBeUndefined();
    expect(env({ podCidrs: '10.244.0.0/16,fd00:10:244::/48' }).find((e) => e.name === 'WEFT_POD_CIDRS')).toEqual({ name: 'WEFT_POD_CIDRS', value: '10.244.0.0/16,fd00:10:244::/48' });
    expect(() => resolveOptions({ podCidrs: '10.244.0.0/16,10.0.0.0' })).toThrow('--pod-cidrs: "10.0.0.0" is not a CIDR');
  });

  it('RBAC: the agent may read pods and namespaces, patch pods/status, get its DaemonSet; the control plane reads and reviews tokens', () => {
    const objs = all();
    const rules = (name: string) => (find(objs, 'ClusterRole', name).rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]);
    expect(rules('weft-agent-istio-system')).toEqual([
      { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['list'] },
      { apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] },
      { apiGroups: ['apps'], resources: ['daemonsets'], verbs: ['get'], resourceNames: ['weft-agent'] },
    ]);
    const control = rules('weft-control-istio-system');
    for (const r of control) {
      if (r.resources.includes('tokenreviews')) expect(r).toEqual({ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] });
      else expect(r.verbs).toEqual(['get', 'list', 'watch']);
    }
    expect(control.flatMap((r) => r.verbs).some((v) => ['*', 'delete', 'patch'].includes(v))).toBe(false);
    // Deploying waypoints: what src/control/gateway/waypoints.ts writes, in a role of its own; no secrets, no pods, no wildcards.
    const waypoints = rules('weft-control-waypoints-istio-system');
    expect(waypoints).toEqual([
      { apiGroups: ['apps'], resources: ['deployments'], verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
      { apiGroups: [''], resources: ['services', 'serviceaccounts'], verbs: ['get', 'list', 'watch', 'create', 'patch', 'delete'] },
      { apiGroups: ['gateway.networking.k8s.io'], resources: ['gateways/status'], verbs: ['patch', 'update'] },
    ]);
    const binding = find(objs, 'ClusterRoleBinding', 'weft-control-waypoints-istio-system') as unknown as { subjects: unknown[] };
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'weft-control', namespace: 'istio-system' }]);
    const args = (containersOf(find(objs, 'Deployment', 'weft-control'))[0]!.args ?? []).join(' ');
    expect(args).toContain('--waypoint-image weft:0.1.0 --waypoint-control-address weft-control.istio-system.svc:15012');
  });

  it('the control plane rolls without a gap: two replicas, surge before removal, a PDB, readiness, a grace period above the drain deadline, the Lease RBAC', () => {
    const objs = all();
    const dep = find(objs, 'Deployment', 'weft-control') as unknown as { spec: { replicas: number; strategy: unknown } };
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.strategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const pod = podSpecOf(find(objs, 'Deployment', 'weft-control'))!;
    const c = pod.containers[0]!;
    expect(c.readinessProbe?.httpGet?.path).toBe('/ready');
    const args = c.args ?? [];
    const flag = (f: string) => Number(args[args.indexOf(f) + 1]);
    expect(flag('--drain-spread-ms')).toBeLessThan(flag('--drain-deadline-ms'));
    expect(pod.terminationGracePeriodSeconds! * 1000).toBeGreaterThan(flag('--drain-deadline-ms'));
    expect(c.env).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
    expect(find(objs, 'PodDisruptionBudget', 'weft-control').spec).toEqual({ minAvailable: 1, selector: { matchLabels: { app: 'weft-control' } } });
    // The Lease only: created, then read and renewed by name; nothing else in coordination.k8s.io.
    expect(find(objs, 'Role', 'weft-control-leader-election').rules).toEqual([
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: [args[args.indexOf('--leader-lease') + 1]], verbs: ['get', 'update'] },
    ]);
    expect((find(objs, 'RoleBinding', 'weft-control-leader-election') as unknown as { subjects: unknown[] }).subjects).toEqual([{ kind: 'ServiceAccount', name: 'weft-control', namespace: 'istio-system' }]);
  });

  it("the control plane's ClusterRole covers exactly the resources its Kubernetes source watches", async () => {
    const kubeApi = join(repo, 'src/control/config/kube-api.ts');
    if (!existsSync(kubeApi)) return; // the Kubernetes source is not in this tree
    const { KUBE_RESOURCES } = (await import(kubeApi)) as { KUBE_RESOURCES: { apiVersion: string; plural: string }[] };
    const granted = (find(all(), 'ClusterRole', 'weft-control-istio-system').rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[])
      .filter((r) => r.verbs.includes('watch'))
      .flatMap((r) => r.resources.map((res) => `${r.apiGroups[0]}/${res}`))
      .sort();
    const watched = KUBE_RESOURCES.map((r) => `${r.apiVersion.includes('/') ? r.apiVersion.split('/')[0] : ''}/${r.plural}`).sort();
    expect(granted).toEqual(watched);
  });

  it('CRDs: structural, one storage version, named as Istio names them, serving what Istio objects use', () => {
    const crds = all().filter((o) => o.kind === 'CustomResourceDefinition') as unknown as {
      metadata: { name: string };
      spec: { group: string; names: { kind: string; plural: string }; versions: { name: string; storage: boolean; schema: { openAPIV3Schema: unknown } }[] };
    }[];
    expect(crds.map((c) => c.spec.names.kind).sort()).toEqual(['AuthorizationPolicy', 'DestinationRule', 'PeerAuthentication', 'RequestAuthentication', 'ServiceEntry', 'Telemetry', 'VirtualService', 'WorkloadEntry']);
    const untyped: string[] = [];
    const structural = (s: Record<string, unknown>, path: string) => {
      if (typeof s.type !== 'string') untyped.push(path);
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, Record<string, unknown>>)) structural(v, `${path}.${k}`);
      if (s.items) structural(s.items as Record<string, unknown>, `${path}[]`);
      if (typeof s.additionalProperties === 'object') structural(s.additionalProperties as Record<string, unknown>, `${path}{}`);
    };
    for (const c of crds) {
      expect(c.metadata.name).toBe(`${c.spec.names.plural}.${c.spec.group}`);
      expect(c.spec.versions.filter((v) => v.storage)).toHaveLength(1);
      for (const v of c.spec.versions) structural(v.schema.openAPIV3Schema as Record<string, unknown>, `${c.metadata.name}/${v.name}`);
    }
    expect(untyped).toEqual([]);
    // Objects as Istio's own models build them have a served version and kind here.
    const samples = [
      new AuthorizationPolicy({ metadata: { name: 'a' }, spec: { action: 'ALLOW', rules: [{ from: [{ source: { principals: ['x'] } }] }] } }),
      new PeerAuthentication({ metadata: { name: 'p' }, spec: { mtls: { mode: 'STRICT' } } }),
      new RequestAuthentication({ metadata: { name: 'r' }, spec: { jwtRules: [{ issuer: 'i' }] } }),
      new ServiceEntry({ metadata: { name: 's' }, spec: { hosts: ['x.example'], ports: [{ number: 443, name: 'tls', protocol: 'TLS' }], resolution: 'DNS' } }),
      new WorkloadEntry({ metadata: { name: 'w' }, spec: { address: '10.0.0.1' } }),
      new DestinationRule({ metadata: { name: 'd' }, spec: { host: 'x' } }),
      new VirtualService({ metadata: { name: 'v' }, spec: { hosts: ['x'] } }),
      new Telemetry({ metadata: { name: 't' }, spec: { tracing: [{ randomSamplingPercentage: 10 }] } }),
    ];
    for (const s of samples) {
      s.validate();
      const [group, version] = s.apiVersion.split('/');
      const crd = crds.find((c) => c.spec.group === group && c.spec.names.kind === s.kind);
      expect(crd?.spec.versions.map((v) => v.name), `${s.apiVersion} ${s.kind}`).toContain(version);
    }
  });

  it('--otlp-logs-endpoint: the agents export their access log there (WEFT_OTLP_LOGS_ENDPOINT, which the agent reads); off by default', async () => {
    const env = (objs: Obj[]) => podSpecOf(find(objs, 'DaemonSet'))!.containers.find((c) => c.name === 'agent')!.env!;
    expect(env(all()).map((e) => e.name)).not.toContain('WEFT_OTLP_LOGS_ENDPOINT');
    const url = 'http://otel-collector.observability:4318/v1/logs';
    const on = env(all({ otlpLogsEndpoint: url }));
    expect(on).toContainEqual({ name: 'WEFT_OTLP_LOGS_ENDPOINT', value: url });
    expect(on).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
    expect(renderFiles(resolveOptions({ otlpLogsEndpoint: url }))[0]!.content).toContain(`weft install --otlp-logs-endpoint ${url} -o DIR`);
    expect(() => resolveOptions({ otlpLogsEndpoint: 'otel-collector:4318' })).toThrow(/--otlp-logs-endpoint .*http/);
    // The agent's command line takes the variable as its --otlp-logs-endpoint.
    const program = new Command();
    registerAgentCommand(program);
    const agent = program.commands.find((c) => c.name() === 'agent')!;
    const before = process.env.WEFT_OTLP_LOGS_ENDPOINT;
    process.env.WEFT_OTLP_LOGS_ENDPOINT = url;
    try {
      agent.exitOverride().action(() => {});
      await program.parseAsync(['agent', '--node', 'n1'], { from: 'user' });
      expect(agent.opts()).toMatchObject({ otlpLogsEndpoint: url, otlpLogsTimeout: 5_000, otlpLogsMaxQueue: 2_048 });
    } finally {
      if (before === undefined) delete process.env.WEFT_OTLP_LOGS_ENDPOINT;
      else process.env.WEFT_OTLP_LOGS_ENDPOINT = before;
    }
  });

  it('the waypoint template is an istio-waypoint Gateway with the HBONE mesh listener', () => {
    const gw = find(all(), 'Gateway') as unknown as { spec: { gatewayClassName: string; listeners: unknown[] }; metadata: { namespace?: string } };
    expect(gw.spec).toEqual({ gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] });
    expect(gw.metadata.namespace).toBeUndefined(); // applied with -n into the app namespace
  });

  it('`weft install` writes the files, or one stream on stdout', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-install-'));
    try {
      const run = (...args: string[]) => spawnSync(process.execPath, [join(repo, 'bin/weft.js'), 'install', ...args], { encoding: 'utf8', timeout: 60_000 });
      const w = run('--namespace', 'mesh', '--trust-domain', 'corp.example', '-o', dir);
      expect(w.status, w.stderr).toBe(0);
      const expected = renderFiles(resolveOptions({ namespace: 'mesh', trustDomain: 'corp.example' }));
      for (const f of expected) expect(readFileSync(join(dir, f.path), 'utf8')).toBe(f.content);
      expect(readFileSync(join(dir, 'agent.yaml'), 'utf8')).toContain('weft install --namespace mesh --trust-domain corp.example -o DIR');
      const s = run();
      expect(s.status, s.stderr).toBe(0);
      expect(s.stdout).toBe(renderStream(resolveOptions()));
      expect(parseAllDocuments(s.stdout).map((d) => (d.toJS() as Obj).kind)).toEqual(
        renderFiles(resolveOptions()).filter((f) => (BASE_FILES as readonly string[]).includes(f.path)).flatMap((f) => f.objects.map((o) => o.kind)),
      );
      const plain = run('--plaintext-xds');
      expect(plain.status, plain.stderr).toBe(0);
      expect(plain.stdout).toBe(renderStream(resolveOptions({ plaintextXds: true })));
      const bad = run('--ca-source', 'vault');
      expect(bad.status).not.toBe(0);
      expect(bad.stderr).toMatch(/ca-source/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the defaults are what the README and the agent assume', () => {
    expect(DEFAULTS).toMatchObject({ namespace: 'istio-system', trustDomain: 'cluster.local', caSource: 'self-signed' });
  });
});
