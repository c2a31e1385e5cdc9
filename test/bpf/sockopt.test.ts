// originalDstSockopt: SO_ORIGINAL_DST for the iptables REDIRECT baseline (rules only in our netns).
import type net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { listenerInNetns, originalDstSockopt, socketInNetns } from '../../src/bpf/index.ts';
import { closeServer, Fixture, nodeClient, serve, sh } from './env.ts';

const fx = new Fixture();
let netns: string;
let server: net.Server | undefined;

const fdOf = (s: net.Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;

beforeAll(async () => {
  netns = fx.netns();
  sh('ip', '-n', netns, 'addr', 'add', '10.80.0.1/32', 'dev', 'lo');
  sh('ip', 'netns', 'exec', netns, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '10.80.0.1', '--dport', '8080', '-j', 'REDIRECT', '--to-ports', '15001');
  server = await serve(listenerInNetns(`/run/netns/${netns}`, '0.0.0.0', 15001), (s) => {
    const od = originalDstSockopt(fdOf(s));
    return od ? `${od.address}:${od.port}` : 'none';
  });
});

afterAll(async () => {
  await closeServer(server);
  fx.cleanup();
});

it('returns the pre-REDIRECT destination (the local address when not NATed)', async () => {
  const dial = (host: string, port: number) => nodeClient(socketInNetns(`/run/netns/${netns}`, { family: 4 }), host, port);
  expect((await dial('10.80.0.1', 8080)).reply).toBe('10.80.0.1:8080');
  expect((await dial('127.0.0.1', 15001)).reply).toBe('127.0.0.1:15001');
});
