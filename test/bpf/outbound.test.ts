// End-to-end outbound capture: connect4/6 + sockops + getpeername on a pod cgroup, the agent's
// 15001 listener inside the pod netns, original destinations recovered from the accepted socket.
import fs from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenerInNetns, NodeCapture, WEFT, type OriginalDst, type PodCapture } from '../../src/bpf/index.ts';
import { closeServer, Fixture, podClient, serve, sh } from './env.ts';

const fx = new Fixture();
let capture: NodeCapture;
let pod: PodCapture;
let pod0: { cgroupPath: string; netns: string };
const servers: net.Server[] = [];
const seen: (OriginalDst | undefined)[] = [];

beforeAll(async () => {
  const netns = fx.netns();
  const cgroupPath = fx.cgroup();
  pod0 = { cgroupPath, netns };
  // "Remote" addresses the pod dials, local to the netns so uncaptured connects have a server
  // (this kernel has no dummy interfaces).
  sh('ip', '-n', netns, 'addr', 'add', '10.77.0.1/32', 'dev', 'lo');
  sh('ip', '-n', netns, 'addr', 'add', 'fd00:77::1/128', 'dev', 'lo', 'nodad');
  const nsPath = `/run/netns/${netns}`;

  capture = NodeCapture.open({ pinRoot: fx.pinRoot() });
  fx.defer(() => capture.uninstall());
  pod = capture.enroll({ id: 'pod-a', cgroupPath, netns: nsPath });

  // The agent: outbound listeners on 127.0.0.1:15001 and [::1]:15001 inside the pod netns.
  const agent = (s: net.Socket, data: string) => {
    const od = capture.originalDst({ netnsCookie: pod.netnsCookie, peer: { address: s.remoteAddress!, port: s.remotePort! } });
    seen.push(od);
    return `agent ${data} ${od ? `${od.address}:${od.port}` : 'unknown'}`;
  };
  servers.push(await serve(listenerInNetns(nsPath, '127.0.0.1', WEFT.PORT_OUTBOUND), agent));
  servers.push(await serve(listenerInNetns(nsPath, '::1', WEFT.PORT_OUTBOUND, { v6Only: true }), agent));
  // Apps in the pod: reached directly when not captured.
  servers.push(await serve(listenerInNetns(nsPath, '127.0.0.1', 9090), () => 'app-loopback'));
  servers.push(await serve(listenerInNetns(nsPath, '10.77.0.1', 8080), () => 'app-direct'));
  servers.push(await serve(listenerInNetns(nsPath, '10.77.0.1', 9091), () => 'app-excluded'));
});

afterAll(async () => {
  for (const s of servers) await closeServer(s);
  fx.cleanup();
});

describe('outbound capture', () => {
  it('redirects a pod connect to 15001 and recovers the original destination', async () => {
    const r = await podClient(pod0, '10.77.0.1', 8080);
    expect(r.error).toBeUndefined();
    expect(r.reply).toBe('agent ping 10.77.0.1:8080');
    // getpeername4 shows the app the destination it asked for, not 127.0.0.1:15001.
    expect(r.peer).toEqual(['10.77.0.1', 8080]);
    const od = seen.at(-1)!;
    expect(od).toMatchObject({ address: '10.77.0.1', port: 8080, family: 4, v4Mapped: false, netnsCookie: pod.netnsCookie, cgroupId: pod.cgroupId });
    // Taken on read: the entry is gone.
    expect([...capture.origDstMap.keys()]).toHaveLength(0);
  });

  it('counts captured connections per cgroup', async () => {
    const before = pod.outboundCount();
    await podClient(pod0, '10.77.0.1', 8080);
    expect(pod.outboundCount()).toBe(before + 1n);
    expect(capture.outboundCount(pod.cgroupId)).toBe(pod.outboundCount());
  });

  it('captures IPv6 and v4-mapped destinations', async () => {
    const v6 = await podClient(pod0, 'fd00:77::1', 8443, { family: 6 });
    expect(v6.reply).toBe('agent ping fd00:77::1:8443');
    expect(v6.peer).toEqual(['fd00:77::1', 8443]);
    const mapped = await podClient(pod0, '::ffff:10.77.0.1', 8081, { family: 6 });
    expect(mapped.reply).toBe('agent ping 10.77.0.1:8081');
    expect(mapped.peer).toEqual(['::ffff:10.77.0.1', 8081]);
    expect(seen.at(-1)).toMatchObject({ v4Mapped: true, family: 4 });
  });

  it('leaves loopback, excluded ports and agent-marked sockets alone', async () => {
    const count = pod.outboundCount();
    expect((await podClient(pod0, '127.0.0.1', 9090)).reply).toBe('app-loopback');
    pod.excludeOutboundPort(9091);
    expect((await podClient(pod0, '10.77.0.1', 9091)).reply).toBe('app-excluded');
    expect((await podClient(pod0, '10.77.0.1', 8080, { mark: WEFT.AGENT_MARK })).reply).toBe('app-direct');
    expect(pod.outboundCount()).toBe(count);
    // Still captured without the mark; exclusions are per pod netns.
    expect((await podClient(pod0, '10.77.0.1', 8080)).reply).toMatch(/^agent/);
  });

  it('does not touch processes outside the pod cgroup', async () => {
    const count = pod.outboundCount();
    expect((await podClient({ netns: pod0.netns }, '10.77.0.1', 8080)).reply).toBe('app-direct');
    expect(pod.outboundCount()).toBe(count);
  });

  it('release removes links, counters, exclusions and pins', () => {
    const dir = pod.pinDir;
    pod.release();
    expect(fs.existsSync(dir)).toBe(false);
    expect(sh('bpftool', 'cgroup', 'show', pod0.cgroupPath).trim()).toBe('');
    expect(capture.outboundCount(pod.cgroupId)).toBe(0n);
    expect([...capture.outExclMap.keys()].filter((k) => k.netnsCookie === pod.netnsCookie)).toEqual([]);
  });
});
