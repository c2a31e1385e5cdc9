// Test fixtures for the BPF tests: uniquely named (weft-bt-*) netns, cgroups and pin roots that
// are always removed, and bounded helpers to run clients inside a "pod" (cgroup + netns).
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { cgroup2Mount, ensureBpffs } from '../../src/bpf/index.ts';

export const uniq = (tag = 'bt') => `weft-${tag}-${crypto.randomBytes(3).toString('hex')}`;

export function sh(cmd: string, ...args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Owns everything a test creates; cleanup() undoes it in reverse order and never throws. */
export class Fixture {
  private undo: (() => void)[] = [];

  netns(name = uniq()): string {
    sh('ip', 'netns', 'add', name);
    this.undo.push(() => sh('ip', 'netns', 'del', name));
    sh('ip', '-n', name, 'link', 'set', 'lo', 'up');
    return name;
  }

  cgroup(name = uniq()): string {
    const dir = path.join(cgroup2Mount(), name);
    fs.mkdirSync(dir);
    this.undo.push(() => {
      // Kill stragglers this test started (only pids inside our own cgroup), then remove it.
      for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {}
      }
      for (let i = 0; i < 50; i++) {
        try {
          fs.rmdirSync(dir);
          return;
        } catch {
          execFileSync('sleep', ['0.05']);
        }
      }
    });
    return dir;
  }

  pinRoot(name = uniq()): string {
    const dir = path.join(ensureBpffs(), name);
    this.undo.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Registers an extra cleanup step (runs before the ones registered earlier). */
  defer(fn: () => void): void {
    this.undo.push(fn);
  }

  cleanup(): void {
    for (const fn of this.undo.reverse()) {
      try {
        fn();
      } catch {}
    }
    this.undo = [];
  }
}

export interface ClientResult {
  ok: boolean;
  reply?: string;
  peer?: [string, number];
  local?: [string, number];
  error?: string;
}

const CLIENT_PY = `
import json, socket, sys
host, port, fam, mark = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if fam == '6' else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)  # SO_MARK
try:
    s.connect((host, port))
    s.sendall(b'ping')
    data = s.recv(4096)
    print(json.dumps({'ok': True, 'reply': data.decode(), 'peer': list(s.getpeername()[:2]), 'local': list(s.getsockname()[:2])}))
except OSError as e:
    print(json.dumps({'ok': False, 'error': type(e).__name__ + ': ' + str(e)}))
`;

/**
 * Runs a python client as a pod process: it joins the cgroup first (so its sockets are the pod's),
 * then enters the netns with nsenter (which, unlike `ip netns exec`, does not remount /sys).
 * Without cgroupPath it stays in the test's cgroup (a process outside the pod).
 */
export function podClient(
  pod: { cgroupPath?: string; netns: string },
  host: string,
  port: number,
  opts: { family?: 4 | 6; mark?: number } = {},
): Promise<ClientResult> {
  const join = pod.cgroupPath ? `echo $$ > ${pod.cgroupPath}/cgroup.procs && ` : '';
  const script = `${join}exec nsenter --net=/run/netns/${pod.netns} python3 -c "$0" "$@"`;
  const args = ['-c', script, CLIENT_PY, host, String(port), String(opts.family ?? 4), String(opts.mark ?? 0)];
  return new Promise((resolve) => {
    execFile('sh', args, { timeout: 15_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout.trim()) as ClientResult);
      } catch {
        resolve({ ok: false, error: `client failed: ${err?.message ?? ''} ${stderr}` });
      }
    });
  });
}

/** A Node server on an fd that answers each connection's first data with reply(socket, data). */
export function serve(fd: number, reply: (s: net.Socket, data: string) => string): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', (d) => s.end(reply(s, String(d))));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve(server));
  });
}

export function closeServer(server: net.Server | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}

/** Connects an (unconnected) fd created by the addon with Node and exchanges one message. */
export function nodeClient(fd: number, host: string, port: number, timeoutMs = 5000): Promise<ClientResult> {
  return new Promise((resolve) => {
    const s = new net.Socket({ fd, readable: true, writable: true });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, timeoutMs);
    let data = '';
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ ok: false, error: e.code ?? e.message });
    });
    s.on('data', (d) => (data += String(d)));
    s.on('end', () => {
      clearTimeout(timer);
      resolve({ ok: true, reply: data });
      s.destroy();
    });
    s.connect(port, host, () => s.write('ping'));
  });
}
