// Hostile peers against the agent's own ports, on one lab (both capture modes side by side): a
// connection to a pod's 15006 or a CONNECT to its 15008 is refused instead of the agent dialling
// itself, and 20,000 idle sockets to a pod's 15008 neither bloat the agent nor keep mesh traffic out.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import { getJson, labName, leftovers, podExec, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/hardening-app.yaml', import.meta.url).pathname;
const PROBE = new URL('./fixtures/hbone-probe.mjs', import.meta.url).pathname;
const IDLE = new URL('./fixtures/idle-sockets.py', import.meta.url).pathname;
const lab = labName('hard');
const tmp = mkdtempSync(join(tmpdir(), 'weft-hard-'));
chmodSync(tmp, 0o755);

/** The bound README documents for the agent under 20,000 idle sockets to one pod's 15008. */
const IDLE_RSS_GROWTH_MIB = 64;

type PodJ = { metadata: { name: string; namespace: string }; status: { podIP: string } };
const podIP = (ns: string, name: string) => getJson<PodJ>(lab, 'pods', ns).find((p) => p.metadata.name === name)!.status.podIP;
const logPath = (node: string) => `/run/weft/${lab}/logs/agent_${node}.log`;
const logLines = (node: string) => readFileSync(logPath(node), 'utf8').split('\n').filter((l) => l.startsWith('{'));
const inNode = (node: string, argv: string[]) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, ...argv], { encoding: 'utf8' });
const configDump = (node: string) => JSON.parse(inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15000/config_dump']).stdout) as Record<string, unknown>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The agent process of a node, found by its enrollment socket in this lab's state directory. */
function agentPid(node: string): number {
  const out = spawnSync('pgrep', ['-f', `weft.js agent --node ${node} --socket /run/weft/${lab}/`], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
  expect(out.length).toBe(1);
  return Number(out[0]);
}
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

describe('hardening: the agent refuses itself as a destination and bounds 15008', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
    expect(leftovers(lab)).toEqual([]);
  });

  it('iptables capture: a connection to a pod IP on 15006 is refused once, with no self-connection loop', async () => {
    const ip = podIP('mesh', 'ipt-echo');
    // Reached at all: the iptables pod answers on its app port from both kinds of clients.
    expect(podExec(lab, 'plain/outsider', ['curl', '-sf', '-m', '5', `http://${ip}:8080/`])).toContain('ipt-echo');
    await sleep(500);
    const before = logLines('node-1').length;
    for (const from of ['plain/outsider', 'mesh/client']) {
      const r = weft(['exec', '--name', lab, from, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '4', `http://${ip}:15006/`], 20_000);
      expect(r.code, `curl from ${from}`).not.toBe(0); // refused or reset, never an answer
    }
    await sleep(3000); // a loop writes thousands of lines a second; give one time to show
    const added = logLines('node-1').slice(before).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(added.length).toBeLessThanOrEqual(4);
    expect(added.filter((l) => String(l.error ?? '').includes('self-call')).length).toBeGreaterThanOrEqual(1);
    // The agent is idle again, not looping.
    expect(podExec(lab, 'plain/outsider', ['curl', '-sf', '-m', '5', `http://${ip}:8080/`])).toContain('ipt-echo');
  });

  it('eBPF capture: a CONNECT to the pod itself on 15008 (or 15006) is refused with 400', async () => {
    const echo = podIP('mesh', 'echo');
    const ca = await CertificateAuthority.create({ source: { type: 'self-signed', dir: `/run/weft/${lab}/control/ca` } });
    const { keyPem, csrPem } = await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'mesh', serviceAccount: 'default' });
    const chain = await ca.signWorkload(csrPem, { trustDomain: 'cluster.local', namespace: 'mesh', serviceAccount: 'default' }, 300);
    writeFileSync(join(tmp, 'mesh.crt'), chain.slice(0, -1).join(''));
    writeFileSync(join(tmp, 'mesh.key'), keyPem);
    const probe = (authority: string) =>
      JSON.parse(podExec(lab, 'plain/outsider', [process.execPath, PROBE, echo, authority, join(tmp, 'mesh.crt'), join(tmp, 'mesh.key')])) as { status?: number; error?: string };
    expect(probe(`${echo}:8080`).status).toBe(200); // the certificate is good
    expect(probe(`${echo}:15008`).status).toBe(400);
    expect(probe(`${echo}:15006`).status).toBe(400);
    expect(probe(`${echo}:15001`).status).toBe(400);
  });

  it('20,000 idle sockets to a pod\'s 15008: agent memory stays bounded and a mesh tunnel still opens', async () => {
    const echo = podIP('mesh', 'echo');
    const pid = agentPid('node-1');
    // A warm baseline: the tunnel under test has been opened once before.
    expect(podExec(lab, 'mesh/client', ['curl', '-sf', '-m', '5', `http://${echo}:8080/`])).toContain('"pod":"echo"');
    const base = rssKiB(pid);
    const attacker = spawn('nsenter', [`--net=/run/netns/${lab}.plain.outsider`, 'python3', IDLE, echo, '15008', '20000', '120'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    attacker.stdout.on('data', (d: Buffer) => (out += d.toString()));
    attacker.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let peak = base;
    try {
      const end = Date.now() + 90_000;
      while (!out.includes('\n')) {
        if (Date.now() > end || attacker.exitCode !== null) throw new Error(`idle-socket client did not report: ${out}${err}`);
        peak = Math.max(peak, rssKiB(pid));
        await sleep(100);
      }
      const counts = JSON.parse(out) as { connected: number; failed: number; unresolved: number };
      expect(counts.connected + counts.failed + counts.unresolved).toBe(20_000);
      expect(counts.connected).toBeGreaterThan(15_000); // they did reach the listener
      // While they are held: a legitimate tunnel, bounded wait.
      const answer = podExec(lab, 'mesh/client', ['curl', '-sf', '-m', '3', '-w', '\n%{time_total}', `http://${echo}:8080/`]).trim().split('\n');
      expect(answer[0]).toContain('"pod":"echo"');
      const tunnelMs = Math.round(Number(answer.at(-1)) * 1000);
      // Past the handshake deadline the admitted ones are gone too; sample memory meanwhile.
      for (let i = 0; i < 30; i++) {
        peak = Math.max(peak, rssKiB(pid));
        await sleep(200);
      }
      const dump = configDump('node-1') as { hboneAdmission?: { handshakes: number; refused: Record<string, number> } };
      console.log(`agent RSS ${base} kB -> peak ${peak} kB; tunnel in ${tunnelMs} ms; admission ${JSON.stringify(dump.hboneAdmission)}`);
      expect(peak - base).toBeLessThan(IDLE_RSS_GROWTH_MIB * 1024);
      expect(dump.hboneAdmission?.refused.handshakesPerSource).toBeGreaterThan(0);
      expect(dump.hboneAdmission?.handshakes).toBe(0); // every idle one timed out
    } finally {
      attacker.stdin.end();
      attacker.kill('SIGTERM');
    }
  });
});
