// Agent restart: capture lives in pinned links and maps, so closing every fd (the agent exiting)
// keeps pods captured (fail closed while no listener exists), and a new process adopts the pins.
// Release then leaves nothing attached and nothing pinned.
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenerInNetns, NodeCapture, WEFT, type PodCapture, type PodSpec } from '../../src/bpf/index.ts';
import { closeServer, Fixture, podClient, serve, sh } from './env.ts';

const fx = new Fixture();
let spec: PodSpec;
let netns: string;
let pinRoot: string;
let agentServer: net.Server | undefined;
const servers: net.Server[] = [];

/** Starts an "agent" outbound listener answering with the original destination. */
async function startAgent(capture: NodeCapture, pod: PodCapture, tag: string): Promise<net.Server> {
  const fd = listenerInNetns(spec.netns as string, '127.0.0.1', WEFT.PORT_OUTBOUND);
  return serve(fd, (s) => {
    const od = capture.originalDst({ netnsCookie: pod.netnsCookie, peer: { address: s.remoteAddress!, port: s.remotePort! } });
    return `${tag} ${od?.address}:${od?.port}`;
  });
}

beforeAll(async () => {
  netns = fx.netns();
  sh('ip', '-n', netns, 'addr', 'add', '10.79.0.1/32', 'dev', 'lo');
  spec = { id: 'pod-r', cgroupPath: fx.cgroup(), netns: `/run/netns/${netns}` };
  pinRoot = fx.pinRoot();
  servers.push(await serve(listenerInNetns(spec.netns as string, '10.79.0.1', 8080), () => 'app-direct'));
});

afterAll(async () => {
  for (const s of [...servers, agentServer]) await closeServer(s);
  fx.cleanup();
});

describe('pinning and agent restart', () => {
  let linkIds: Record<string, number>;

  it('captures, then survives the agent closing every fd', async () => {
    const capture = NodeCapture.open({ pinRoot });
    const pod = capture.enroll(spec);
    linkIds = pod.linkIds();
    agentServer = await startAgent(capture, pod, 'agent1');
    expect((await podClient({ ...spec, netns }, '10.79.0.1', 8080)).reply).toBe('agent1 10.79.0.1:8080');

    // The agent dies: its listener and every BPF fd close.
    await closeServer(agentServer);
    agentServer = undefined;
    pod.close();
    capture.close();
    expect(fs.readdirSync(path.join(pinRoot, 'pods', spec.id)).sort()).toEqual(
      ['link_connect4', 'link_connect6', 'link_getpeername4', 'link_getpeername6', 'link_sk_lookup', 'link_sockops', WEFT.MAP_IN_COUNT, WEFT.MAP_IN_EXCL, WEFT.MAP_IN_SOCKS].sort(),
    );
    // Still captured while no agent runs: refused, never sent around the mesh to the app.
    const r = await podClient({ ...spec, netns }, '10.79.0.1', 8080);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/ConnectionRefused/);
    expect(sh('bpftool', 'cgroup', 'show', spec.cgroupPath)).toMatch(/connect4/);
  });

  it('a new agent adopts the pinned links and maps and capture works again', async () => {
    const capture = NodeCapture.open({ pinRoot });
    fx.defer(() => capture.uninstall());
    expect(capture.podIds()).toEqual([spec.id]);
    const pod = capture.enroll(spec);
    expect(pod.linkIds()).toEqual(linkIds); // adopted, not re-attached
    agentServer = await startAgent(capture, pod, 'agent2');
    expect((await podClient({ ...spec, netns }, '10.79.0.1', 8080)).reply).toBe('agent2 10.79.0.1:8080');
    expect(pod.outboundCount()).toBe(3n);

    pod.release();
    expect(sh('bpftool', 'cgroup', 'show', spec.cgroupPath).trim()).toBe('');
    const links = sh('bpftool', 'link', 'show');
    for (const id of Object.values(linkIds)) expect(links).not.toMatch(new RegExp(`^${id}:`, 'm'));
    expect(capture.podIds()).toEqual([]);
    expect((await podClient({ ...spec, netns }, '10.79.0.1', 8080)).reply).toBe('app-direct');

    capture.uninstall();
    expect(fs.existsSync(pinRoot)).toBe(false);
  });

  it('forget() releases a pod known only from its pins', () => {
    const capture = NodeCapture.open({ pinRoot });
    fx.defer(() => capture.uninstall());
    capture.enroll(spec).close();
    capture.forget(spec.id);
    expect(capture.podIds()).toEqual([]);
    expect(sh('bpftool', 'cgroup', 'show', spec.cgroupPath).trim()).toBe('');
    capture.uninstall();
  });
});
