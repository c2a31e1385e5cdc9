// socketsInNetns and NetnsSocketPool: dial sockets made in batches inside a pod netns.
import fs from 'node:fs';
import type net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { listenerInNetns, socketNetnsCookie } from '../../src/bpf/index.ts';
import { dialSocketsInNetns, NetnsSocketPool, netnsCookie, sockName, socketsInNetns } from '../../src/bpf/netns.ts';
import { closeServer, Fixture, nodeClient, serve, sh, uniq } from './env.ts';

const fx = new Fixture();
let netns: string;
let nsFd: number;
let server: net.Server | undefined;
const pools: NetnsSocketPool[] = [];

const openFds = () => fs.readdirSync('/proc/self/fd').length;

beforeAll(async () => {
  netns = fx.netns(uniq('pool'));
  nsFd = fs.openSync(`/run/netns/${netns}`, 'r');
  server = await serve(listenerInNetns(nsFd, '127.0.0.1', 7070), (_s, data) => `pong ${data}`);
});

afterAll(async () => {
  for (const p of pools) p.close();
  await closeServer(server);
  fs.closeSync(nsFd);
  fx.cleanup();
});

it('makes a batch of sockets in the netns, all or nothing', () => {
  const fds = socketsInNetns(nsFd, { family: 4, mark: 0x539 }, 5);
  expect(new Set(fds).size).toBe(5);
  const cookie = netnsCookie(nsFd);
  for (const fd of fds) expect(socketNetnsCookie(fd)).toBe(cookie);
  for (const fd of fds) fs.closeSync(fd);
  expect(() => socketsInNetns(nsFd, { family: 4 }, 0)).toThrow(/count/);
  expect(() => socketsInNetns(nsFd, { family: 4, bind: { port: 1 } } as never, 2)).toThrow(/unbound/);
  const before = openFds();
  expect(() => socketsInNetns(-5 as never, { family: 4 }, 3)).toThrow();
  expect(openFds()).toBe(before);
});

it('hands out sockets that dial from inside the pod netns, refilling in growing batches', async () => {
  const pool = new NetnsSocketPool(nsFd, { nonblock: true }, 8);
  pools.push(pool);
  expect(pool.size).toBe(0); // nothing made until the first dial
  const cookie = netnsCookie(nsFd);
  const first = pool.take(4);
  expect(pool.size).toBe(3); // a first batch of 4
  expect(socketNetnsCookie(first)).toBe(cookie);
  // 127.0.0.1:7070 exists only in the pod netns: reaching it proves where the socket lives.
  expect((await nodeClient(first, '127.0.0.1', 7070)).reply).toBe('pong ping');
  const taken = [pool.take(4), pool.take(4), pool.take(4), pool.take(4)];
  expect(pool.size).toBe(7); // the next batch doubled to the cap of 8
  for (const fd of taken) fs.closeSync(fd);
  const v6 = pool.take(6);
  expect(pool.size).toBe(7 + 3);
  fs.closeSync(v6);
});

it('closes the sockets it still holds, and refuses to hand out more', () => {
  const pool = new NetnsSocketPool(nsFd);
  fs.closeSync(pool.take(4));
  const before = openFds();
  pool.close();
  expect(openFds()).toBe(before - 3);
  expect(pool.size).toBe(0);
  expect(() => pool.take(4)).toThrow(/closed/);
});

it('binds dial sockets to ports of their own, round the netns\'s ephemeral range from a cursor', () => {
  sh('ip', 'netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=41000 41009', 'net.ipv4.ip_local_reserved_ports=41002');
  const { fds, cursor } = dialSocketsInNetns(nsFd, { family: 4 }, 4, 8);
  try {
    // 41008, 41009, then round to 41000, 41001 (41002 is reserved, so the next starts after it).
    expect(fds.map((fd) => sockName(fd).port)).toEqual([41008, 41009, 41000, 41001]);
    expect(cursor).toBe(2);
    const next = dialSocketsInNetns(nsFd, { family: 6 }, 1, cursor);
    expect(next.fds.map((fd) => sockName(fd).port)).toEqual([41003]);
    next.fds.forEach((fd) => fs.closeSync(fd));
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  expect(() => dialSocketsInNetns(nsFd, { family: 4 }, 1, -1)).toThrow(/cursor/);
  expect(() => dialSocketsInNetns(nsFd, { family: 4, listen: 5 } as never, 1, 0)).toThrow(/dial sockets only/);
});
