// Inbound capture: sk_lookup on the pod netns steers connections arriving from outside (a veth
// from a peer netns) to the agent's 15006 listener; loopback and the HBONE port are left alone.
import fs from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenerInNetns, NodeCapture, socketInNetns, WEFT, type PodCapture } from '../../src/bpf/index.ts';
import { closeServer, Fixture, nodeClient, serve, sh } from './env.ts';

const fx = new Fixture();
let capture: NodeCapture;
let pod: PodCapture;
let podNs: string;
let peerNs: string;
let inbound: net.Server | undefined;
const servers: net.Server[] = [];

const POD_IP = '10.78.0.2';

/** One connection from a netns (an in-process socket created there and connected by Node). */
const dial = (ns: string, port: number) => nodeClient(socketInNetns(`/run/netns/${ns}`, { family: 4 }), POD_IP, port);

beforeAll(async () => {
  podNs = fx.netns();
  peerNs = fx.netns();
  sh('ip', '-n', podNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', peerNs);
  sh('ip', '-n', podNs, 'addr', 'add', `${POD_IP}/24`, 'dev', 'eth0');
  sh('ip', '-n', peerNs, 'addr', 'add', '10.78.0.1/24', 'dev', 'eth0');
  sh('ip', '-n', podNs, 'link', 'set', 'eth0', 'up');
  sh('ip', '-n', peerNs, 'link', 'set', 'eth0', 'up');
  const nsPath = `/run/netns/${podNs}`;

  capture = NodeCapture.open({ pinRoot: fx.pinRoot() });
  fx.defer(() => capture.uninstall());
  pod = capture.enroll({ id: 'pod-in', cgroupPath: fx.cgroup(), netns: nsPath });

  // Agent listener: the accepted socket's local address is the original destination.
  const fd = listenerInNetns(nsPath, '127.0.0.1', WEFT.PORT_INBOUND);
  inbound = await serve(fd, (s) => `agent ${s.localAddress}:${s.localPort}`);
  pod.setInboundListener(fd);
  servers.push(await serve(listenerInNetns(nsPath, '0.0.0.0', 8080), () => 'app'));
  servers.push(await serve(listenerInNetns(nsPath, '0.0.0.0', WEFT.PORT_HBONE), () => 'hbone'));
});

afterAll(async () => {
  for (const s of [...servers, inbound]) await closeServer(s);
  fx.cleanup();
});

describe('inbound capture (sk_lookup)', () => {
  it('steers a connection from outside the pod to the 15006 listener, keeping the original destination', async () => {
    const r = await dial(peerNs, 8080);
    expect(r).toEqual({ ok: true, reply: `agent ${POD_IP}:8080` });
    // Any port, even one nothing listens on in the pod.
    expect((await dial(peerNs, 9999)).reply).toBe(`agent ${POD_IP}:9999`);
    expect(pod.inboundCount()).toBe(2n);
  });

  it('does not steer connections over loopback inside the pod (the agent delivering to the app)', async () => {
    expect((await dial(podNs, 8080)).reply).toBe('app');
    expect(pod.inboundCount()).toBe(2n);
  });

  it('leaves the HBONE port and excluded ports alone', async () => {
    expect((await dial(peerNs, WEFT.PORT_HBONE)).reply).toBe('hbone');
    pod.excludeInboundPort(8080);
    expect((await dial(peerNs, 8080)).reply).toBe('app');
    pod.includeInboundPort(8080);
    expect((await dial(peerNs, 8080)).reply).toMatch(/^agent/);
  });

  it('fails closed: with the agent listener gone, inbound is refused, not delivered to the app', async () => {
    await closeServer(inbound);
    inbound = undefined;
    expect(await dial(peerNs, 8080)).toEqual({ ok: false, error: 'ECONNREFUSED' });
    const fd = listenerInNetns(`/run/netns/${podNs}`, '127.0.0.1', WEFT.PORT_INBOUND);
    inbound = await serve(fd, () => 'agent again');
    pod.setInboundListener(fd);
    expect((await dial(peerNs, 8080)).reply).toBe('agent again');
  });

  it('release detaches the netns link and removes the pod pins', async () => {
    const dir = pod.pinDir;
    const linkId = pod.linkIds()[ 'sk_lookup' ];
    pod.release();
    expect(fs.existsSync(dir)).toBe(false);
    expect(sh('bpftool', 'link', 'show')).not.toMatch(new RegExp(`^${linkId}:`, 'm'));
    expect((await dial(peerNs, 8080)).reply).toBe('app');
  });
});
