// The agent's in-pod listeners exist for both families: capture sends IPv6 connections to
// [::1]:15001 and to the IPv6 slot of 15006, so each family needs its own socket. A pod without
// IPv6 must still get its IPv4 listeners (the caller recognises the error and goes on).
import { closeSync, openSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOOPBACK, listenInPod, listenInPodNative, noIpv6 } from '../../../src/agent/proxy/pod-sockets.ts';
import { run, runSync } from '../../../src/util/exec.ts';

const tag = randomBytes(3).toString('hex');
const dual = `weft-ps6-${tag}`;
const v4only = `weft-ps4-${tag}`;
const fds: number[] = [];
const nsFd = (ns: string) => {
  const fd = openSync(`/run/netns/${ns}`, 'r');
  fds.push(fd);
  return fd;
};
const inNs = (ns: string, argv: string[]) => runSync(['nsenter', `--net=/run/netns/${ns}`, ...argv]);

describe('in-pod listeners, per family', () => {
  beforeAll(() => {
    for (const ns of [dual, v4only]) expect(runSync(['ip', 'netns', 'add', ns]).code).toBe(0);
    expect(inNs(v4only, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.lo.disable_ipv6=1']).code).toBe(0);
    for (const ns of [dual, v4only]) expect(runSync(['ip', '-n', ns, 'link', 'set', 'lo', 'up']).code).toBe(0);
  });
  afterAll(() => {
    fds.forEach((fd) => closeSync(fd));
    for (const ns of [dual, v4only]) runSync(['ip', 'netns', 'del', ns]);
  });

  it('opens the same port on 0.0.0.0 and :: side by side (the IPv6 socket is IPv6-only)', async () => {
    const fd = nsFd(dual);
    const servers = [];
    for (const address of ['0.0.0.0', '::', LOOPBACK[4], LOOPBACK[6]]) {
      const port = address.startsWith('0') || address === '::' ? 15006 : 15001;
      servers.push((await listenInPod(fd, address, port, (s) => s.destroy())).server);
    }
    expect(servers.map((s) => s.address())).toMatchObject([{ address: '0.0.0.0', port: 15006 }, { address: '::', port: 15006 }, { address: '127.0.0.1', port: 15001 }, { address: '::1', port: 15001 }]);
    servers.forEach((s) => s.close());
  });

  it('accepts an IPv6 connection on [::1]', async () => {
    const fd = nsFd(dual);
    let seen = '';
    const { server } = await listenInPod(fd, '::1', 15101, (s) => {
      seen = s.remoteAddress ?? '';
      s.destroy();
    });
    // Dial from inside the netns (asynchronously: this process must run to accept).
    await run(['nsenter', `--net=/run/netns/${dual}`, 'python3', '-c', 'import socket; s=socket.create_connection(("::1", 15101), timeout=3); s.recv(1)']);
    expect(seen).toBe('::1');
    server.close();
  });

  it('fails recognisably where the pod has no IPv6, and IPv4 still works', async () => {
    const fd = nsFd(v4only);
    let err: unknown;
    try {
      await listenInPod(fd, LOOPBACK[6], 15001, () => {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeDefined();
    expect(noIpv6(err)).toBe(true);
    const { server } = await listenInPod(fd, LOOPBACK[4], 15001, (s) => s.destroy());
    server.close();
    expect(noIpv6(Object.assign(new Error('x'), { code: 'EADDRINUSE' }))).toBe(false);
  });

  it('natively (the relay thread accepts): an IPv6 connection on [::1] arrives as an fd with its peer; no IPv6 fails as before', async () => {
    const fd = nsFd(dual);
    const seen: { address: string; port: number }[] = [];
    const { server } = listenInPodNative(fd, '::1', 15102, (c) => {
      seen.push({ address: c.remoteAddress, port: c.remotePort });
      c.reset();
    });
    const port = await run(['nsenter', `--net=/run/netns/${dual}`, 'python3', '-c', [
      'import socket',
      's = socket.create_connection(("::1", 15102), timeout=3)',
      // The port first: the reset may come at any point after the connect.
      'print(s.getsockname()[1], flush=True)',
      'try: s.recv(1)',
      'except OSError: pass',
    ].join('\n')]);
    expect(seen).toEqual([{ address: '::1', port: Number(port.trim()) }]);
    server.close();
    server.close(); // once only: a second close must not close whatever holds that fd number now
    let err: unknown;
    try {
      listenInPodNative(nsFd(v4only), LOOPBACK[6], 15001, () => {});
    } catch (e) {
      err = e;
    }
    expect(noIpv6(err)).toBe(true);
  });
});
