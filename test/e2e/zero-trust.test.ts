// Zero-trust L4 end to end: mesh traffic crosses nodes only as mutual TLS on 15008, L4
// authorization decides who may connect, certificates rotate under open connections, and the
// data path keeps working on cached state while the control plane is down.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import { BIN, curlFrom, getJson, labName, leftovers, podExec, until, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/zero-trust-app.yaml', import.meta.url).pathname;
const PROBE = new URL('./fixtures/hbone-probe.mjs', import.meta.url).pathname;
const lab = labName('zt');
const tmp = mkdtempSync(join(tmpdir(), 'weft-zt-'));
chmodSync(tmp, 0o755);

type PodJ = { metadata: { name: string; namespace: string }; status: { podIP: string } };
const podIP = (ns: string, name: string) => getJson<PodJ>(lab, 'pods', ns).find((p) => p.metadata.name === name)!.status.podIP;
const inNode = (node: string, argv: string[], input?: string) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, ...argv], { encoding: 'utf8', input });
const metrics = (node: string) => inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15020/metrics']).stdout;
const configDump = (node: string) => JSON.parse(inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15000/config_dump']).stdout) as { certificates: { identity: string; notAfter?: string }[]; workloads: unknown[] };
const agentLog = (node: string) =>
  readFileSync(`/run/weft/${lab}/logs/agent_${node}.log`, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
/** curl from a pod; returns the exit code (0 = a full HTTP answer). */
const curlCode = (pod: string, url: string) => weft(['exec', '--name', lab, pod, '--', 'curl', '-s', '-o', '/dev/null', '-m', '4', url], 20_000).code;

describe('zero-trust L4', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '--cert-ttl', '16', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('carries mesh traffic between nodes only as TLS on port 15008', async () => {
    const pcap = join(tmp, 'node0.pcap');
    // Capture node-0's link from the segment side: everything node-0 sends or receives.
    const dump = spawn('nsenter', [`--net=/run/netns/${lab}.net`, 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', 'n0', '-U', '-n', '-w', pcap], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    dump.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await until(() => err.includes('listening on'), 10_000, 'tcpdump');
    const marker = `weft-secret-${Math.random().toString(36).slice(2)}`;
    const body = podExec(lab, 'shop/buyer', ['curl', '-s', '-m', '5', '-H', `x-marker: ${marker}`, '--data', marker, 'http://echo.shop/']);
    expect(body).toContain(marker); // the echo saw it, so it crossed the link
    // It crossed in the native relay (the agents' default data path), whose session to node-1 stays pooled.
    const dump0 = configDump('node-0') as unknown as { dataPath: string; relay: { sessions: number } };
    expect(dump0.dataPath).toBe('native');
    expect(dump0.relay.sessions).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 500)); // let tcpdump drain the kernel's capture buffer
    dump.kill('SIGTERM');
    await new Promise((r) => dump.on('exit', r));
    const read = spawnSync('tcpdump', ['-r', pcap, '-nn', '-A'], { encoding: 'utf8' });
    expect(read.status).toBe(0);
    expect(read.stdout).not.toContain(marker);
    const buyer = podIP('shop', 'buyer');
    const echo = podIP('shop', 'echo');
    const flows = spawnSync('tcpdump', ['-r', pcap, '-nn', `tcp and host ${buyer} and host ${echo}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    expect(flows.length).toBeGreaterThan(5);
    for (const f of flows) expect(f).toMatch(new RegExp(`${echo.replace(/\./g, '\\.')}\\.15008[ :]`));
  });

  it('refuses plaintext from outside the mesh under PeerAuthentication STRICT, allows it under PERMISSIVE', async () => {
    const direct = `http://${podIP('shop', 'echo')}:8080/`;
    expect(curlCode('plain/outsider', direct)).toBe(0); // PERMISSIVE by default
    writeFileSync(join(tmp, 'strict.yaml'), `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n`);
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'strict.yaml')]).code).toBe(0);
    await until(() => curlCode('plain/outsider', direct) !== 0, 15_000, 'STRICT to take effect');
    expect(curlFrom(lab, 'shop/buyer', 'http://echo.shop/').pod).toBe('echo'); // mTLS still fine
    expect(weft(['delete', '--name', lab, '-f', join(tmp, 'strict.yaml')]).code).toBe(0);
    await until(() => curlCode('plain/outsider', direct) === 0, 15_000, 'PERMISSIVE again');
  });

  it("lets the node's probes through STRICT (from 169.254.7.127, as istio-cni SNATs them), and no pod that claims that address", async () => {
    const docroot = mkdtempSync(join(tmp, 'www-'));
    chmodSync(docroot, 0o755);
    const file = join(tmp, 'guarded.yaml');
    writeFileSync(
      file,
      [
        'apiVersion: v1\nkind: Pod\nmetadata: {name: guarded, namespace: shop, labels: {app: guarded}}\nspec:\n  nodeName: node-0\n  containers:\n  - name: web',
        `    command: [python3, -m, http.server, "8080", --bind, 0.0.0.0, --directory, ${docroot}]`,
        '    readinessProbe: {httpGet: {port: 8080, path: /}, periodSeconds: 1}',
        '---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: guarded-strict, namespace: shop}\nspec:\n  selector: {matchLabels: {app: guarded}}\n  mtls: {mode: STRICT}',
        '---\napiVersion: v1\nkind: Pod\nmetadata: {name: spoofer, namespace: plain}\nspec:\n  nodeName: node-0\n  containers: [{name: shell, image: weft/sleep}]\n',
      ].join('\n'),
    );
    expect(weft(['apply', '--name', lab, '-f', file]).code).toBe(0);
    try {
      type PodR = PodJ & { status: { conditions?: { type: string; status: string }[] } };
      const ready = () => getJson<PodR>(lab, 'pods', 'shop').find((p) => p.metadata.name === 'guarded')?.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
      await until(ready, 30_000, 'guarded to become Ready');
      const url = `http://${podIP('shop', 'guarded')}:8080/`;
      await until(() => curlCode('plain/outsider', url) !== 0, 15_000, 'STRICT to take effect'); // plaintext from a pod: refused
      // Probes keep passing under STRICT, and the app sees them come from the probe address.
      const requests = () => weft(['logs', '--name', lab, 'shop/guarded']).stdout.split('\n').filter((l) => l.includes('"GET '));
      const before = requests().length;
      await until(() => requests().length >= before + 3, 15_000, 'three more probes');
      expect(requests().slice(before).every((l) => l.startsWith('169.254.7.127 '))).toBe(true);
      expect(ready()).toBe(true);
      expect(curlCode('shop/buyer', url)).toBe(0); // mTLS from a mesh pod: fine
      expect(inNode('node-0', ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '4', url]).stdout).toBe('200'); // the node itself
      // A pod that gives itself the probe address gets nothing to the app: the node drops it on the way.
      const guardedNs = `/run/netns/${lab}.shop.guarded`;
      spawnSync('nsenter', [`--net=${guardedNs}`, 'nft', '-f', '-'], { input: 'add table ip spoofwatch\nadd chain ip spoofwatch c { type filter hook prerouting priority raw; }\nadd rule ip spoofwatch c ip saddr 169.254.7.127 tcp sport 40999 counter\n' });
      podExec(lab, 'plain/spoofer', ['ip', 'addr', 'add', '169.254.7.127/32', 'dev', 'eth0']);
      const spoof = `import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(("169.254.7.127", 40999)); s.settimeout(2)\ntry:\n    s.connect(("${podIP('shop', 'guarded')}", 8080)); print("connected")\nexcept OSError as e:\n    print(type(e).__name__)`;
      expect(podExec(lab, 'plain/spoofer', ['python3', '-c', spoof]).trim()).not.toBe('connected');
      expect(spawnSync('nsenter', [`--net=${guardedNs}`, 'nft', 'list', 'table', 'ip', 'spoofwatch'], { encoding: 'utf8' }).stdout).toMatch(/counter packets 0 bytes 0/);
    } finally {
      expect(weft(['delete', '--name', lab, '-f', file]).code).toBe(0);
    }
  });

  it('lets only namespace shop reach the echo service once a policy says so', async () => {
    expect(curlCode('rival/spy', 'http://echo.shop/')).toBe(0); // no policy yet: allowed
    writeFileSync(
      join(tmp, 'policy.yaml'),
      `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-shop, namespace: shop}\nspec:\n  selector: {matchLabels: {app: echo}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {namespaces: [shop]}\n`,
    );
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'policy.yaml')]).code).toBe(0);
    await until(() => curlCode('rival/spy', 'http://echo.shop/') !== 0, 15_000, 'the policy to take effect');
    expect(curlFrom(lab, 'shop/buyer', 'http://echo.shop/').pod).toBe('echo');
    // The denial is counted with Istio's labels and the access log names the policy.
    expect(metrics('node-1')).toMatch(/istio_tcp_connections_closed_total\{reporter="destination",source_workload="spy",source_workload_namespace="rival",[^}]*response_flags="DENY",connection_security_policy="mutual_tls"\} [1-9]/);
    const denied = agentLog('node-1').filter((l) => l.msg === 'connection failed' && l.response_flags === 'DENY');
    expect(denied.at(-1)).toMatchObject({ 'src.identity': 'spiffe://cluster.local/ns/rival/sa/default', 'dst.workload': 'echo' });
    expect(String(denied.at(-1)!.policy)).toContain('shop/allow-shop');
  });

  it('takes the node-local fast path to a pod on the same node, and still applies its policy', async () => {
    const cashier = podIP('shop', 'cashier');
    const dst = `${cashier}:8080`;
    const lines = (direction: string) => agentLog('node-0').filter((l) => l['dst.addr'] === dst && l.direction === direction);
    expect(curlFrom(lab, 'shop/buyer', `http://${dst}/`).pod).toBe('cashier');
    await until(() => lines('outbound').length > 0 && lines('inbound').length > 0, 5_000, 'both access-log lines');
    // One agent did both halves: no HBONE session, the destination's own inbound record.
    expect(lines('outbound').at(-1)).toMatchObject({ pod: 'shop/buyer', node_local: true, protocol: 'node-local', 'dst.workload': 'cashier', 'dst.identity': 'spiffe://cluster.local/ns/shop/sa/default' });
    expect(lines('outbound').at(-1)!['dst.hbone_addr']).toBeUndefined();
    expect(lines('inbound').at(-1)).toMatchObject({ pod: 'shop/cashier', node_local: true, 'src.workload': 'buyer', 'src.identity': 'spiffe://cluster.local/ns/shop/sa/default' });
    expect(JSON.stringify((configDump('node-0') as unknown as { hbonePool: unknown }).hbonePool)).not.toContain(cashier);
    expect(metrics('node-0')).toMatch(/istio_tcp_connections_opened_total\{reporter="destination",source_workload="buyer",[^}]*destination_workload="cashier",[^}]*connection_security_policy="mutual_tls"/);
    // The destination's AuthorizationPolicy decides, with the source pod's identity.
    expect(curlCode('rival/spy', `http://${dst}/`)).toBe(0);
    writeFileSync(
      join(tmp, 'cashier-policy.yaml'),
      `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: cashier-shop-only, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cashier}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/shop/sa/default]}\n`,
    );
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'cashier-policy.yaml')]).code).toBe(0);
    await until(() => curlCode('rival/spy', `http://${dst}/`) !== 0, 15_000, 'the policy to take effect');
    expect(curlFrom(lab, 'shop/buyer', `http://${dst}/`).pod).toBe('cashier');
    await until(() => lines('inbound').some((l) => l.response_flags === 'DENY'), 5_000, 'the denial in the access log');
    const denied = lines('inbound').filter((l) => l.response_flags === 'DENY').at(-1)!;
    expect(denied).toMatchObject({ node_local: true, 'src.identity': 'spiffe://cluster.local/ns/rival/sa/default' });
    expect(String(denied.policy)).toContain('shop/cashier-shop-only');
  });

  it('refuses HBONE handshakes without a mesh certificate, and identities the policy does not allow', async () => {
    const echo = podIP('shop', 'echo');
    const probe = (args: string[]) => JSON.parse(podExec(lab, 'plain/outsider', [process.execPath, PROBE, echo, `${echo}:8080`, ...args])) as { status?: number; error?: string };
    expect(probe([]).status).toBeUndefined(); // no client certificate: no session at all
    const ca = await CertificateAuthority.create({ source: { type: 'self-signed', dir: `/run/weft/${lab}/control/ca` } });
    const issue = async (ns: string) => {
      const { keyPem, csrPem } = await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: ns, serviceAccount: 'default' });
      const chain = await ca.signWorkload(csrPem, { trustDomain: 'cluster.local', namespace: ns, serviceAccount: 'default' }, 300);
      writeFileSync(join(tmp, `${ns}.crt`), chain.slice(0, -1).join(''));
      writeFileSync(join(tmp, `${ns}.key`), keyPem);
      return [join(tmp, `${ns}.crt`), join(tmp, `${ns}.key`)];
    };
    expect(probe(await issue('rival')).status).toBe(401);
    expect(probe(await issue('shop')).status).toBe(200);
    // A certificate from another CA fails the handshake.
    const other = await CertificateAuthority.create({ source: { type: 'self-signed' } });
    const { keyPem, csrPem } = await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'default' });
    writeFileSync(join(tmp, 'forged.crt'), (await other.signWorkload(csrPem, { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'default' })).slice(0, -1).join(''));
    writeFileSync(join(tmp, 'forged.key'), keyPem);
    expect(probe([join(tmp, 'forged.crt'), join(tmp, 'forged.key')]).status).toBeUndefined();
  });

  it('rotates short-lived certificates while a long-lived connection stays up', async () => {
    const id = 'spiffe://cluster.local/ns/shop/sa/default';
    const first = configDump('node-0').certificates.find((c) => c.identity === id)?.notAfter;
    expect(first).toBeDefined();
    // One HTTP/1.1 keep-alive connection, a request a second for 20 s (certificates live 16 s).
    const script = [
      'import http.client, json, time',
      'c = http.client.HTTPConnection("echo.shop", 80, timeout=5)',
      'ports = set(); ok = 0',
      'for i in range(20):',
      '    c.request("GET", "/"); r = c.getresponse(); b = json.loads(r.read()); ok += r.status == 200; ports.add(b["client"]); time.sleep(1)',
      'print(json.dumps({"ok": ok, "connections": len(ports)}))',
    ].join('\n');
    const long = spawn(process.execPath, [BIN, 'exec', '--name', lab, 'shop/buyer', '--', 'python3', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    long.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // Meanwhile the certificate is replaced, and new connections keep working.
    await until(() => configDump('node-0').certificates.find((c) => c.identity === id)?.notAfter !== first, 30_000, 'a rotation');
    for (let i = 0; i < 3; i++) expect(curlFrom(lab, 'shop/buyer', 'http://echo.shop/').pod).toBe('echo');
    await new Promise((r) => long.on('exit', r));
    expect(JSON.parse(out)).toEqual({ ok: 20, connections: 1 });
  });

  it('keeps existing and new connections working while the control plane is down', async () => {
    // Certificates live 16 s here; start with a freshly renewed one so the test is not a race
    // with expiry (with the default 24 h lifetime agents ride out a day without the CA).
    const id = 'spiffe://cluster.local/ns/shop/sa/default';
    const left = () => Date.parse(configDump('node-0').certificates.find((c) => c.identity === id)?.notAfter ?? '0') - Date.now();
    await until(() => left() > 12_000, 30_000, 'a fresh certificate');
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    try {
      for (let i = 0; i < 3; i++) expect(curlFrom(lab, 'shop/buyer', 'http://echo.shop/').pod).toBe('echo');
      expect(curlCode('rival/spy', 'http://echo.shop/')).not.toBe(0); // cached policy still enforced
    } finally {
      expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
    }
  });

  it('counts at node level every connection its access log shows, inbound HBONE included', async () => {
    expect(curlFrom(lab, 'shop/buyer', 'http://echo.shop/').pod).toBe('echo'); // node-0 -> node-1 over HBONE
    const fromMetrics = (node: string) =>
      Object.fromEntries(
        [...metrics(node).matchAll(/^weft_agent_connections_total\{direction="(\w+)",protocol="(\w+)",result="(\w+)"\} (\d+)$/gm)].map(([, d, p, r, v]) => [`${d} ${p} ${r}`, Number(v)]),
      );
    const fromLog = (node: string) => {
      const out: Record<string, number> = {};
      const proto: Record<string, string> = { HBONE: 'hbone', TCP: 'tcp', 'node-local': 'node_local' };
      for (const line of readFileSync(`/run/weft/${lab}/logs/agent_${node}.log`, 'utf8').split('\n')) {
        if (!line.endsWith('}') || !/"msg":"connection (complete|failed)"/.test(line)) continue; // whole access-log lines
        const l = JSON.parse(line) as Record<string, unknown>;
        const key = `${String(l.direction)} ${proto[String(l.protocol)]} ${l.error ? 'failure' : 'success'}`;
        out[key] = (out[key] ?? 0) + 1;
      }
      return out;
    };
    // The log is flushed in batches: read both until they come to the same numbers, then compare
    // that one pair (a connection may end between two reads).
    const same = (a: Record<string, number>, b: Record<string, number>) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
    for (const node of ['node-0', 'node-1']) {
      let counted: Record<string, number> = {};
      let logged: Record<string, number> = {};
      const agree = () => ((counted = fromMetrics(node)), (logged = fromLog(node)), same(counted, logged));
      await until(agree, 5_000, `${node}'s metrics to match its access log`).catch(() => undefined);
      expect(counted).toEqual(logged);
    }
    expect(fromMetrics('node-1')['inbound hbone success']).toBeGreaterThan(0);
  });

  it('exports metrics that promtool accepts', () => {
    for (const node of ['node-0', 'node-1']) {
      const text = metrics(node);
      expect(text).toContain('istio_tcp_connections_opened_total{');
      const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });

  it('leaves nothing behind', () => {
    expect(weft(['down', '--name', lab]).code).toBe(0);
    expect(leftovers(lab)).toEqual([]);
  });
});
