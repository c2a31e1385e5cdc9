// The enrollment socket admits root only, by SO_PEERCRED: even when the socket file is made
// world-writable (a host path mounted with other permissions, a chmod by mistake), a non-root
// process is cut off before its request is read.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentCall } from '../../../src/api/enrollment.ts';
import { PodManager } from '../../../src/agent/inpod/pod-manager.ts';
import { serveEnrollment } from '../../../src/agent/inpod/server.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import type { ProxyContext } from '../../../src/agent/proxy/context.ts';

const NOBODY = 65534;

describe('enrollment socket peer check', () => {
  let dir: string;
  let server: Server;
  let socket: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-enroll-sock-'));
    chmodSync(dir, 0o755);
    socket = join(dir, 'agent.sock');
    const log = pino({ level: 'silent' });
    const metrics = new AgentMetrics('iptables');
    // No capture backend is needed: the requests below never get as far as enrolling.
    const pods = new PodManager({ default: 'iptables' }, log, metrics, join(dir, 'state'), { log, metrics } as unknown as ProxyContext);
    server = await serveEnrollment(socket, pods, log);
    chmodSync(socket, 0o666);
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs a request as `uid` in a child process; what it printed. */
  const requestAs = (uid: number, method: string, path: string, body?: unknown) => {
    const script = `
      const req = require('node:http').request({ socketPath: ${JSON.stringify(socket)}, method: ${JSON.stringify(method)}, path: ${JSON.stringify(path)}, headers: { 'content-type': 'application/json' } }, (res) => {
        let s = ''; res.on('data', (d) => (s += d)); res.on('end', () => console.log('HTTP ' + res.statusCode + ' ' + s));
      });
      req.on('error', (e) => console.log('ERROR ' + e.code));
      req.end(${JSON.stringify(body === undefined ? '' : JSON.stringify(body))});`;
    // Asynchronously: the server answers from this process's event loop.
    return new Promise<string>((resolve) => execFile(process.execPath, ['-e', script], { uid, gid: uid, encoding: 'utf8', timeout: 20_000, cwd: '/' }, (_e, out, err) => resolve((out + err).trim())));
  };

  it('answers root', async () => {
    expect(await agentCall(socket, 'GET', '/v1/pods', undefined, 5000)).toEqual({ pods: [] });
    expect(await requestAs(0, 'GET', '/healthz')).toBe(`HTTP 200 {"ok":true,"pid":${process.pid}}`);
  });

  it('cuts off a non-root process, for reads and for enrollments', async () => {
    expect(await requestAs(NOBODY, 'GET', '/v1/pods')).toMatch(/^ERROR (ECONNRESET|EPIPE)$/);
    const pod = { uid: 'u1', name: 'p', namespace: 'n', serviceAccount: 'sa', ips: ['10.0.0.1'], netns: '/proc/1/ns/net', cgroup: '/sys/fs/cgroup' };
    expect(await requestAs(NOBODY, 'PUT', '/v1/pods/u1', pod)).toMatch(/^ERROR (ECONNRESET|EPIPE)$/);
  });
});
