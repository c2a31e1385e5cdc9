// A rolling upgrade of the control plane under traffic: `weft control-plane upgrade` starts a
// second replica beside the running one (same addresses, SO_REUSEPORT), then SIGTERMs the old
// one, which drains. Meanwhile a client on node-0 opens a connection to node-1's echo through the
// mesh every 100 ms: none fails. The agents move to the new replica and resume from the versions
// they hold: their mesh state is the same version (no update at all), their workloads the same,
// and their certificates the very ones they had.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, labName, leftovers, until, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/agent-sync-app.yaml', import.meta.url).pathname;
const lab = labName('roll');
const NODES = ['node-0', 'node-1'];

const inNode = (node: string, argv: string[]) => spawnSync('nsenter', [`--net=/run/netns/${lab}.${node}`, ...argv], { encoding: 'utf8', timeout: 15_000 });
type Dump = {
  xds: { connected: boolean; synced: boolean; version: number; nacks: number };
  workloads: { uid?: string; name?: string; namespace?: string }[];
  services: unknown[];
  policies: unknown[];
  certificates: { identity: string; state: string; notBefore?: string; notAfter?: string }[];
};
const configDump = (node: string) => JSON.parse(inNode(node, ['curl', '-s', '-m', '5', 'http://127.0.0.1:15000/config_dump']).stdout) as Dump;
const summary = (d: Dump) => ({
  version: d.xds.version,
  workloads: d.workloads.length,
  services: d.services.length,
  policies: d.policies.length,
  certificates: d.certificates.map((c) => `${c.identity} ${c.state} ${c.notBefore}`).sort(),
});

/** Requests every 100 ms from node-0's client to node-1's echo, each on a new connection; one line per request. */
function traffic(count: number) {
  const script = `i=0; while [ $i -lt ${count} ]; do curl -s -o /dev/null -m 3 -w '%{http_code}\\n' http://echo.mesh/ || echo fail; sleep 0.1; i=$((i+1)); done`;
  const p = spawn(process.execPath, [BIN, 'exec', '--name', lab, 'mesh/client', '--', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const guard = setTimeout(() => p.kill('SIGKILL'), count * 3200 + 30_000);
  const done = new Promise<{ codes: string[]; err: string }>((resolve) =>
    p.once('exit', () => {
      clearTimeout(guard);
      resolve({ codes: out.split('\n').filter(Boolean), err });
    }),
  );
  return { done, sent: () => out.split('\n').filter(Boolean).length };
}

describe('control plane rolling upgrade', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    expect(leftovers(lab)).toEqual([]);
  });

  it('moves every agent to the new replica with no failed request and no change of state or certificates', async () => {
    const log = `/run/weft/${lab}/logs/control.log`;
    await until(() => weft(['exec', '--name', lab, 'mesh/client', '--', 'curl', '-sf', '-m', '3', 'http://echo.mesh/']).code === 0, 60_000, 'traffic through the mesh');
    // Every certificate the pods need issued, and the state settled (no update pending).
    await until(() => NODES.every((n) => configDump(n).certificates.length >= 1 && configDump(n).certificates.every((c) => c.state === 'ready')), 30_000, 'certificates ready');
    const before = new Map(NODES.map((n) => [n, summary(configDump(n))]));

    const load = traffic(150); // 15 s
    await until(() => load.sent() >= 20, 30_000, 'traffic under way');
    const up = weft(['control-plane', '--name', lab, 'upgrade'], 120_000);
    expect(up.stderr).toBe('');
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/control plane: upgraded \(pid \d+ drained in \d+ ms; pid \d+ serves\)/);
    const [, oldPid, newPid] = /pid (\d+) drained in \d+ ms; pid (\d+) serves/.exec(up.stdout)!;
    const sentAtUpgrade = load.sent();
    const { codes, err } = await load.done;
    expect(err).toBe('');
    expect(codes.length).toBe(150);
    expect(codes.filter((c) => c !== '200')).toEqual([]);
    expect(sentAtUpgrade).toBeLessThan(150); // the upgrade happened while requests were flowing

    // The old replica drained within its deadline; the new one has both agents.
    const text = readFileSync(log, 'utf8');
    expect(text).toMatch(new RegExp(`"pid":${oldPid}\\b.*"msg":"drained; exiting"`));
    expect(text).not.toMatch(new RegExp(`"pid":${oldPid}\\b.*drain deadline passed`));
    for (const n of NODES) await until(() => configDump(n).xds.connected, 30_000, `${n} connected to the new replica`);
    expect(Number(newPid)).not.toBe(Number(oldPid));
    // Only the new replica is left on the shared addresses: both agents are its clients.
    const controlDump = () => JSON.parse(spawnSync('nsenter', [`--net=/run/netns/${lab}.net`, 'curl', '-s', '-m', '5', 'http://127.0.0.1:15014/debug/config_dump'], { encoding: 'utf8', timeout: 15_000 }).stdout) as { clients: { node: string }[] };
    await until(() => NODES.every((n) => controlDump().clients.some((c) => c.node === n)), 30_000, 'both agents on the new replica');
    console.log(`control plane upgrade: ${up.stdout.trim()}; ${codes.length} requests, ${codes.filter((c) => c !== '200').length} failed`);
    for (const n of NODES) {
      const d = configDump(n);
      expect(d.xds.nacks).toBe(0);
      expect(summary(d)).toEqual(before.get(n));
    }
  }, 300_000);

  it('upgrades again, and kill/start drive the replica now serving', async () => {
    const before = new Map(NODES.map((n) => [n, summary(configDump(n))]));
    const up = weft(['control-plane', '--name', lab, 'upgrade'], 120_000);
    expect(up.code, up.stderr).toBe(0);
    for (const n of NODES) await until(() => configDump(n).xds.connected, 30_000, `${n} connected after the second upgrade`);
    for (const n of NODES) expect(summary(configDump(n))).toEqual(before.get(n));
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    await until(() => NODES.every((n) => !configDump(n).xds.connected), 30_000, 'agents see the control plane gone');
    expect(weft(['exec', '--name', lab, 'mesh/client', '--', 'curl', '-sf', '-m', '3', 'http://echo.mesh/']).code).toBe(0); // served from the state held
    expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
    for (const n of NODES) await until(() => configDump(n).xds.connected, 60_000, `${n} connected after start`);
    // Upgrading a control plane that is down is refused, naming what to do.
    expect(weft(['control-plane', '--name', lab, 'kill']).code).toBe(0);
    const refused = weft(['control-plane', '--name', lab, 'upgrade']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('the control plane is down');
    expect(weft(['control-plane', '--name', lab, 'start']).code).toBe(0);
  }, 300_000);
});
