// Two labs side by side do not see each other, and `weft down` cleans up after a crashed lab.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { curlFrom, getJson, labName, leftovers, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/lab-app.yaml', import.meta.url).pathname;
const a = labName('iso-a');
const b = labName('iso-b');

type PodJ = { metadata: { name: string; namespace: string; labels?: Record<string, string> }; status: { podIP: string } };

describe('lab isolation and recovery', () => {
  afterAll(() => {
    weft(['down', '--name', a]);
    weft(['down', '--name', b]);
  });

  it('runs two labs with the same addresses at the same time without interference', async () => {
    // Start both at once: the labs must not race for names, links or cgroups.
    const { spawn } = await import('node:child_process');
    const up = (lab: string) =>
      new Promise<number>((resolve) => {
        const p = spawn(process.execPath, [new URL('../../bin/weft.js', import.meta.url).pathname, 'up', '--name', lab, '--nodes', '2', '-f', FIXTURE], { stdio: 'ignore' });
        p.on('exit', (code) => resolve(code ?? -1));
      });
    expect(await Promise.all([up(a), up(b)])).toEqual([0, 0]);
    const podsA = getJson<PodJ>(a, 'pods', 'demo').filter((p) => p.metadata.labels?.app === 'echo');
    const podsB = getJson<PodJ>(b, 'pods', 'demo').filter((p) => p.metadata.labels?.app === 'echo');
    const namesA = new Set(podsA.map((p) => p.metadata.name));
    const namesB = new Set(podsB.map((p) => p.metadata.name));
    // Same plan of addresses, but each lab's service only ever reaches its own replicas.
    for (let i = 0; i < 6; i++) {
      expect(namesA.has(curlFrom(a, 'demo/tester', 'http://echo/').pod)).toBe(true);
      expect(namesB.has(curlFrom(b, 'demo/tester', 'http://echo/').pod)).toBe(true);
    }
    expect(weft(['down', '--name', a]).code).toBe(0);
    expect(leftovers(a)).toEqual([]);
    expect(namesB.has(curlFrom(b, 'other/remote', 'http://echo.demo/').pod)).toBe(true);
  });

  it('says that it needs root instead of failing half-way', () => {
    // A user namespace in which we are nobody (65534), with no capabilities: not root, yet still
    // the owner of our own files outside it, so the checkout is readable wherever it lives (a
    // plain setuid to nobody cannot read a checkout under /root).
    const r = spawnSync('unshare', ['--map-user=65534', '--map-group=65534', 'env', 'HOME=/tmp', process.execPath, new URL('../../bin/weft.js', import.meta.url).pathname, 'up', '--name', `${a}-x`], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('the lab needs root');
    expect(leftovers(`${a}-x`)).toEqual([]);
  });

  it('cleans up after the lab daemon is killed', () => {
    const pid = Number(readFileSync(`/run/weft/${b}/daemon.pid`, 'utf8'));
    process.kill(pid, 'SIGKILL');
    expect(weft(['get', 'pods', '--name', b]).stderr).toContain(`lab "${b}" is not running`);
    // Pods keep running without the daemon; down still finds and removes them.
    expect(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout).toContain(`${b}.demo.tester`);
    const r = weft(['down', '--name', b]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/killed \d+ process/);
    expect(leftovers(b)).toEqual([]);
  });
});
