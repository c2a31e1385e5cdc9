// The agent and its control plane, as a node sees them: an agent restarted while the control plane
// is down serves mesh traffic from the state and certificates it kept on the node (HBONE, never
// plaintext on the node's link), and without them refuses everything until it syncs; a credential
// the control plane keeps refusing shows in readiness, and a rotated token or mesh root is picked
// up without a restart; a service account's certificate leaves the node with its last pod.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson, labName, leftovers, until, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/agent-sync-app.yaml', import.meta.url).pathname;
const lab = labName('sync');
const tmp = mkdtempSync(join(tmpdir(), 'weft-sync-'));
chmodSync(tmp, 0o755);
const run = `/run/weft/${lab}`;
const cacheDir = (node: string) => join(run, 'nodes', node, 'cache');

type PodJ = { metadata: { name: string; namespace: string }; status: { podIP?: string; phase: string; message?: string } };
const podIP = (name: string) => getJson<PodJ>(lab, 'pods', 'mesh').find((p) => p.metadata.name === name)!.status.podIP!;
const inNode = (node: string, argv: string[]) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, ...argv], { encoding: 'utf8', timeout: 15_000 });
const readiness = (node: string) => inNode(node, ['curl', '-s', '-o', '/dev/null', '-m', '3', '-w', '%{http_code}', 'http://127.0.0.1:15021/healthz/ready']).stdout;
type Dump = { xds: { connected: boolean; synced: boolean; restored: boolean; authFailures: number; lastError?: string }; certificates: { identity: string; state: string; notBefore?: string }[] };
const configDump = (node: string) => JSON.parse(inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15000/config_dump']).stdout) as Dump;
/** curl with a marker in a header and the body; the exit code and what came back. */
function send(pod: string, url: string, marker: string) {
  const r = weft(['exec', '--name', lab, `mesh/${pod}`, '--', 'curl', '-s', '-m', '4', '-H', `x-marker: ${marker}`, '--data', marker, url], 30_000);
  return { code: r.code, body: r.stdout };
}

/** tcpdump on node-0's link, from the segment side (everything node-0 sends or receives), bounded in packets. */
async function capture(name: string): Promise<{ stop: () => Promise<string> }> {
  const pcap = join(tmp, `${name}.pcap`);
  const dump: ChildProcess = spawn('nsenter', [`--net=/run/netns/${lab}.net`, 'tcpdump', '-Z', 'root', '--immediate-mode', '-c', '50000', '-i', 'n0', '-U', '-n', '-w', pcap], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  dump.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const guard = setTimeout(() => dump.kill('SIGKILL'), 120_000);
  await until(() => err.includes('listening on'), 10_000, 'tcpdump');
  return {
    stop: async () => {
      await new Promise((r) => setTimeout(r, 500)); // let tcpdump drain the kernel's buffer
      const exited = new Promise((r) => dump.once('exit', r));
      dump.kill('SIGTERM');
      await exited;
      clearTimeout(guard);
      return pcap;
    },
  };
}
const pcapText = (pcap: string) => spawnSync('tcpdump', ['-r', pcap, '-nn', '-A'], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout;
const flows = (pcap: string, a: string, b: string) => spawnSync('tcpdump', ['-r', pcap, '-nn', `tcp and host ${a} and host ${b}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);

describe('agent sync: fail closed, state kept on the node, credentials', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('keeps the last good state and certificates on the node, root-only', async () => {
    expect(send('client', 'http://echo.mesh/', 'hello').body).toContain('hello');
    await until(() => existsSync(join(cacheDir('node-0'), 'xds.json')) && readdirSync(join(cacheDir('node-0'), 'certs')).length >= 2, 15_000, 'the cache');
    expect(statSync(cacheDir('node-0')).mode & 0o777).toBe(0o700);
    expect(statSync(join(cacheDir('node-0'), 'certs')).mode & 0o777).toBe(0o700);
    expect(statSync(join(cacheDir('node-0'), 'xds.json')).mode & 0o777).toBe(0o600);
    for (const f of readdirSync(join(cacheDir('node-0'), 'certs'))) expect(statSync(join(cacheDir('node-0'), 'certs', f)).mode & 0o777).toBe(0o600);
  });

  it('restarted while the control plane is down: serves from the kept state, over HBONE only', async () => {
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    try {
      expect(weft(['node-agent', '--name', lab, 'kill', 'node-0']).code).toBe(0);
      expect(weft(['node-agent', '--name', lab, 'start', 'node-0']).code).toBe(0);
      await until(() => readiness('node-0') === '200', 20_000, 'node-0 ready from its cache');
      expect(configDump('node-0').xds).toMatchObject({ connected: false, synced: false, restored: true });
      const dump = await capture('cached');
      const marker = `weft-cached-${Math.random().toString(36).slice(2)}`;
      // Outbound from node-0 (client certificate restored) and inbound to node-0 (server certificate restored).
      const out = send('client', 'http://echo.mesh/', marker);
      const inb = send('caller', `http://${podIP('local')}:8080/`, `${marker}-in`);
      const pcap = await dump.stop();
      expect(out.body).toContain(marker);
      expect(inb.body).toContain(`${marker}-in`);
      expect(pcapText(pcap)).not.toContain(marker);
      for (const [a, b] of [[podIP('client'), podIP('echo')], [podIP('caller'), podIP('local')]] as const) {
        const f = flows(pcap, a, b);
        expect(f.length).toBeGreaterThan(3);
        for (const line of f) expect(line).toMatch(/\.15008[ :]/);
      }
    } finally {
      expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
    }
    await until(() => configDump('node-0').xds.synced, 30_000, 'node-0 synced with the control plane again');
  });

  it('restarted with nothing kept and no control plane: not ready, refuses traffic and enrollment, nothing in clear', async () => {
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    try {
      expect(weft(['node-agent', '--name', lab, 'kill', 'node-0']).code).toBe(0);
      rmSync(cacheDir('node-0'), { recursive: true, force: true });
      expect(weft(['node-agent', '--name', lab, 'start', 'node-0']).code).toBe(0);
      await new Promise((r) => setTimeout(r, 1500));
      expect(readiness('node-0')).toBe('503');
      const dump = await capture('empty');
      const marker = `weft-empty-${Math.random().toString(36).slice(2)}`;
      const out = send('client', `http://${podIP('echo')}:8080/`, marker);
      const inb = send('caller', `http://${podIP('local')}:8080/`, `${marker}-in`);
      const pcap = await dump.stop();
      expect(out.code).not.toBe(0);
      expect(out.body).toBe('');
      expect(inb.code).not.toBe(0);
      expect(pcapText(pcap)).not.toContain(marker);
      expect(flows(pcap, podIP('client'), podIP('echo')).filter((l) => !/\.15008[ :]/.test(l))).toEqual([]);
      // A new pod is not enrolled (so does not start) while the agent has no state to serve it with.
      writeFileSync(join(tmp, 'late.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: late, namespace: mesh}\nspec:\n  nodeName: node-0\n  containers: [{name: shell, image: weft/sleep}]\n');
      weft(['apply', '--name', lab, '-f', join(tmp, 'late.yaml')], 60_000);
      const late = getJson<PodJ>(lab, 'pods', 'mesh').find((p) => p.metadata.name === 'late')!;
      expect(late.status.phase).not.toBe('Running');
      expect(late.status.message).toContain('no mesh state');
      expect(readiness('node-0')).toBe('503');
    } finally {
      expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
    }
    await until(() => readiness('node-0') === '200', 60_000, 'node-0 ready after syncing'); // its backoff grew while nothing answered
    weft(['delete', '--name', lab, 'pod', 'late', '-n', 'mesh']);
    const marker = `weft-synced-${Math.random().toString(36).slice(2)}`;
    await until(() => send('client', 'http://echo.mesh/', marker).body.includes(marker), 30_000, 'traffic after the sync');
  });

  it('readiness reports a node credential the control plane keeps refusing; a rotated token is picked up', async () => {
    const tokenFile = join(run, 'nodes', 'node-0', 'token');
    const tokensFile = join(run, 'control', 'node-tokens.json');
    const good = readFileSync(tokenFile, 'utf8');
    writeFileSync(tokenFile, 'expired-token');
    let rotated = false;
    try {
      // The control plane restarts: every agent reconnects, node-0 with the token now in its file.
      expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
      expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
      // Three refusals in a row, at the agent's reconnect backoff (which grew while the control plane was down).
      await until(() => configDump('node-0').xds.authFailures >= 3, 120_000, 'node-0 refused three times');
      expect(readiness('node-0')).toBe('503');
      expect(configDump('node-0').xds.lastError).toMatch(/UNAUTHENTICATED/);
      expect(readiness('node-1')).toBe('200');
      // Meanwhile traffic keeps flowing on the last good state.
      expect(send('client', 'http://echo.mesh/', 'still').body).toContain('still');
      // The token is rotated: a new one for node-0 replaces the old, without an agent restart.
      const tokens = JSON.parse(readFileSync(tokensFile, 'utf8')) as Record<string, string>;
      delete tokens[good];
      tokens['rotated-token-for-node-0'] = 'node-0';
      writeFileSync(tokensFile, JSON.stringify(tokens), { mode: 0o600 });
      writeFileSync(tokenFile, 'rotated-token-for-node-0');
      rotated = true;
      await until(() => readiness('node-0') === '200', 60_000, 'node-0 ready with the rotated token');
      expect(configDump('node-0').xds).toMatchObject({ connected: true, authFailures: 0 });
    } finally {
      if (!rotated) writeFileSync(tokenFile, good); // later tests need a working agent
    }
  }, 240_000);

  it('forgets the certificate of a service account whose last pod left the node', async () => {
    const id = 'spiffe://cluster.local/ns/mesh/sa/lonely';
    const file = join(cacheDir('node-0'), 'certs', `${createHash('sha256').update(id).digest('hex').slice(0, 32)}.json`);
    await until(() => configDump('node-0').certificates.some((c) => c.identity === id && c.state === 'ready'), 30_000, 'the certificate of lonely');
    const kept = existsSync(file);
    expect(weft(['delete', '--name', lab, 'pod', 'lonely', '-n', 'mesh']).code).toBe(0);
    await until(() => !configDump('node-0').certificates.some((c) => c.identity === id), 15_000, 'the certificate forgotten');
    expect(kept).toBe(true);
    expect(existsSync(file)).toBe(false);
    // The service account still running on node-0 keeps its certificate.
    expect(configDump('node-0').certificates.map((c) => c.identity)).toContain('spiffe://cluster.local/ns/mesh/sa/echo');
  });

  it('picks up a rotated mesh root without restarting agents', async () => {
    const before = new Map(['node-0', 'node-1'].flatMap((n) => configDump(n).certificates.map((c) => [`${n} ${c.identity}`, c.notBefore] as const)));
    const oldRoot = readFileSync(join(run, 'control', 'root-cert.pem'), 'utf8');
    // New CA material: the control plane comes back with a new self-signed root and publishes it.
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    for (const f of readdirSync(join(run, 'control', 'ca'))) rmSync(join(run, 'control', 'ca', f), { force: true });
    expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
    await until(() => readFileSync(join(run, 'control', 'root-cert.pem'), 'utf8') !== oldRoot, 20_000, 'the new root published');
    for (const node of ['node-0', 'node-1']) {
      await until(() => configDump(node).xds.synced && configDump(node).xds.connected, 60_000, `${node} connected to the control plane under the new root`);
      await until(() => configDump(node).certificates.every((c) => c.state === 'ready' && c.notBefore !== before.get(`${node} ${c.identity}`)), 60_000, `${node} certificates renewed under the new root`).catch((e: Error) => {
        throw new Error(`${e.message}: ${JSON.stringify(configDump(node).certificates)} before ${JSON.stringify([...before])}`);
      });
    }
    // Both sides now hold certificates from the new root and trust it: mesh traffic crosses nodes.
    const marker = `weft-rotated-${Math.random().toString(36).slice(2)}`;
    await until(() => send('client', 'http://echo.mesh/', marker).body.includes(marker), 30_000, 'traffic under the new root');
    expect(send('caller', `http://${podIP('local')}:8080/`, 'in').body).toContain('in');
    // A pod created now gets its certificate from the new CA.
    writeFileSync(join(tmp, 'newcomer.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: newcomer, namespace: mesh}\nspec:\n  nodeName: node-0\n  serviceAccountName: lonely\n  containers: [{name: shell, image: weft/sleep}]\n');
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'newcomer.yaml')]).code).toBe(0);
    await until(() => send('newcomer', 'http://echo.mesh/', marker).body.includes(marker), 30_000, 'traffic from a new pod');
  });

  it('leaves nothing behind', () => {
    if (process.env.WEFT_E2E_KEEP_LOGS) spawnSync('cp', ['-r', join(run, 'logs'), process.env.WEFT_E2E_KEEP_LOGS]);
    expect(weft(['down', '--name', lab]).code).toBe(0);
    expect(leftovers(lab)).toEqual([]);
  });
});
