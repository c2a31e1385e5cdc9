// The handover between two agents on a node, with a real new agent (a child process) and real
// sockets: the listening sockets move without a connection ever being refused; a new agent that
// fails, aborts or vanishes leaves the old one serving; one handover at a time; root only.
import { execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { serveHandover, type Giver } from '../../../src/agent/handover/give.ts';
import type { PodInfo } from '../../../src/api/enrollment.ts';

const TAKER = new URL('./fixtures/taker.ts', import.meta.url).pathname;
const log = pino({ level: 'silent' });
const POD: PodInfo = { uid: 'pod-1', name: 'a', namespace: 'ns', serviceAccount: 'sa', ips: ['10.0.0.1'], netns: '/run/netns/x', cgroup: '/sys/fs/cgroup/x' };

const cleanup: (() => void)[] = [];
afterEach(() => cleanup.splice(0).forEach((f) => f()));

type Line = { error?: string; none?: boolean; from?: number; pods?: { uid: string; roles: string[] }[]; node?: string[]; ready?: boolean };

/** The new agent: a child process; its JSON lines and exit. */
function taker(path: string, mode: string) {
  const p = spawn(process.execPath, ['--import', 'tsx', TAKER, path, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.push(() => p.kill('SIGKILL'));
  const lines: Line[] = [];
  let buf = '';
  p.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(JSON.parse(buf.slice(0, i)) as Line);
  });
  const exited = new Promise<number | null>((r) => p.once('exit', r));
  return { pid: p.pid!, lines, exited };
}

/** The old agent: a listener answering "old", and a giver over it that records what happened. */
async function oldAgent() {
  const dir = mkdtempSync(join(tmpdir(), 'weft-handover-'));
  const server: Server = createServer((c) => c.end('old\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const events: string[] = [];
  let settled: () => void = () => {};
  const outcome = new Promise<void>((r) => (settled = r));
  const giver: Giver = {
    prepare: async () => {
      events.push('prepare');
      return { pods: [{ info: POD, fds: { outbound4: (server as unknown as { _handle: { fd: number } })._handle.fd } }], node: {} };
    },
    handedOver: (by) => {
      events.push(`handedOver ${by}`);
      server.close(); // as the agent does: stop accepting; the socket lives on in the new one
      settled();
    },
    resume: (reason) => {
      events.push(`resume ${reason}`);
      settled();
    },
  };
  const path = join(dir, 'handover.sock');
  const hs = await serveHandover(path, giver, log);
  cleanup.push(() => {
    hs.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, port, events, outcome, server };
}

const ask = (port: number) =>
  new Promise<string>((resolve) => {
    let s = '';
    const c = connect(port, '127.0.0.1');
    c.on('data', (d) => (s += d.toString()));
    c.on('end', () => resolve(s));
    c.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
  });

describe('agent handover', () => {
  it('moves the listening sockets: every connection is answered, by the old agent and then the new', async () => {
    const old = await oldAgent();
    const answers: string[] = [];
    let asking = true;
    const loop = (async () => {
      while (asking) answers.push(await ask(old.port));
    })();
    const t = taker(old.path, 'ready');
    await old.outcome;
    await new Promise((r) => setTimeout(r, 300));
    asking = false;
    await loop;
    expect(t.lines[0]).toEqual({ from: process.pid, pods: [{ uid: 'pod-1', roles: ['outbound4'] }], node: [] });
    expect(old.events).toEqual(['prepare', `handedOver ${t.pid}`]);
    expect(answers.filter((a) => a !== 'old\n' && a !== 'new\n')).toEqual([]);
    expect(answers.at(-1)).toBe('new\n');
    expect(await ask(old.port)).toBe('new\n');
  });

  it('a new agent that exits or aborts before it is ready leaves the old one serving', async () => {
    for (const [mode, reason] of [['exit', /went away/], ['abort', /aborted: the test said so/]] as const) {
      const old = await oldAgent();
      const t = taker(old.path, mode);
      await old.outcome;
      await t.exited;
      expect(old.events[0]).toBe('prepare');
      expect(old.events[1]).toMatch(reason);
      expect(await ask(old.port)).toBe('old\n');
      // And it can still hand over afterwards.
      const t2 = taker(old.path, 'ready');
      await until(() => old.events.length === 4);
      expect(old.events[3]).toBe(`handedOver ${t2.pid}`);
    }
  });

  it('a prepare that fails leaves the old agent serving (resumed, not frozen)', async () => {
    const old = await oldAgent();
    const events: string[] = [];
    const dir = mkdtempSync(join(tmpdir(), 'weft-handover-'));
    const path = join(dir, 'h.sock');
    const hs = await serveHandover(path, { prepare: async () => Promise.reject(new Error('no fd')), handedOver: () => events.push('handedOver'), resume: (r) => events.push(`resume ${r}`) }, log);
    cleanup.push(() => {
      hs.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const t = taker(path, 'ready');
    await t.exited;
    expect(t.lines[0]!.error).toBeDefined();
    expect(events).toEqual(['resume no fd']);
    expect(await ask(old.port)).toBe('old\n');
  });

  it('one handover at a time; none after it is done', async () => {
    const old = await oldAgent();
    const first = taker(old.path, 'hold');
    await until(() => first.lines.length > 0);
    const second = taker(old.path, 'ready');
    await second.exited;
    expect(second.lines[0]!.error).toMatch(/another handover is under way/);
    await old.outcome;
    const third = taker(old.path, 'ready');
    await third.exited;
    // The old agent closed its handover socket: the third finds nobody to take from.
    expect(third.lines[0]).toEqual({ none: true });
  });

  it('refuses a non-root peer, whatever the socket file allows', async () => {
    const old = await oldAgent();
    chmodSync(join(old.path, '..'), 0o755);
    chmodSync(old.path, 0o777);
    // Inline, from /: the checkout may sit in a directory only root can read (as in CI).
    const script = `
      const c = require('node:net').connect(${JSON.stringify(old.path)}, () => {
        const body = Buffer.from(JSON.stringify({ type: 'take', version: 1, pid: process.pid }));
        const head = Buffer.alloc(4); head.writeUInt32BE(body.length); c.write(Buffer.concat([head, body]));
      });
      let got = 0;
      c.on('data', (d) => (got += d.length));
      c.on('error', () => {});
      c.on('close', () => { console.log(JSON.stringify({ got })); process.exit(0); });
      setTimeout(() => { console.log(JSON.stringify({ got, open: true })); process.exit(0); }, 5000);`;
    const out = await new Promise<string>((resolve) => execFile(process.execPath, ['-e', script], { uid: 65534, gid: 65534, cwd: '/', encoding: 'utf8', timeout: 20_000 }, (_e, o, err) => resolve((o + err).trim())));
    expect(JSON.parse(out)).toEqual({ got: 0 });
    expect(old.events).toEqual([]);
  });

  it('ignores a peer that does not speak the protocol', async () => {
    const old = await oldAgent();
    for (const garbage of [frame({ type: 'take', version: 99, pid: 1 }), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), frame({ type: 'ready' })]) {
      const answer = await new Promise<string>((resolve) => {
        let got = Buffer.alloc(0);
        const c = connect(old.path, () => c.write(garbage));
        c.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
        c.on('close', () => resolve(got.length > 4 ? got.subarray(4).toString() : ''));
        c.on('error', () => {});
        setTimeout(() => c.destroy(), 12_000);
      });
      expect(answer).toMatch(/refused|^$/);
    }
    expect(old.events).toEqual([]);
    expect(await ask(old.port)).toBe('old\n');
  }, 60_000);
});

function frame(v: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(v));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

async function until(f: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !f(); ) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
