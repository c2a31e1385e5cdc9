// Messages with fds over a Unix stream socket: each message's fds arrive with it and only with it,
// also across a kernel-sized batch, and a malformed message leaves no fd open behind.
import { closeSync, fstatSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../../src/bpf/addon.ts';
import { FdChannel, MAX_FDS_PER_MESSAGE, sendMessage } from '../../src/bpf/fd-passing.ts';

const isOpen = (fd: number) => {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};

const cleanup: (() => void)[] = [];
afterEach(() => cleanup.splice(0).forEach((f) => f()));

function pair(): [number, FdChannel] {
  const [a, b] = native().socketPair();
  const ch = FdChannel.fromFd(b);
  cleanup.push(() => {
    ch.close();
    try {
      closeSync(a);
    } catch {}
  });
  return [a, ch];
}

function listener(): Promise<Server> {
  const s = createServer((c) => c.end('from the received socket\n'));
  cleanup.push(() => s.close());
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r(s)));
}

describe('fd passing', () => {
  it('a listening socket sent over works in the receiver', async () => {
    const [a, ch] = pair();
    const orig = await listener();
    const fd = (orig as unknown as { _handle: { fd: number } })._handle.fd;
    await sendMessage(a, { what: 'listener' }, [fd]);
    const m = ch.receive<{ what: string }>(2000);
    expect(m.body).toEqual({ what: 'listener' });
    expect(m.fds).toHaveLength(1);
    expect(m.fds[0]).not.toBe(fd);
    // The same socket: stop the original, serve on the received fd, connect to the original port.
    const port = (orig.address() as { port: number }).port;
    const srv = createServer((c) => c.end('new\n'));
    cleanup.push(() => srv.close());
    await new Promise<void>((r) => srv.listen({ fd: m.fds[0]! }, r));
    await new Promise<void>((r) => orig.close(() => r()));
    const got = await new Promise<string>((resolve, reject) => {
      let s = '';
      const c = connect(port, '127.0.0.1');
      c.on('data', (d) => (s += d.toString()));
      c.on('end', () => resolve(s));
      c.on('error', reject);
    });
    expect(got).toBe('new\n');
  });

  it("never hands one message's fds with another's, over more than one kernel batch", async () => {
    const [a, ch] = pair();
    const [x, y] = native().socketPair();
    cleanup.push(() => [x, y].forEach((f) => closeSync(f)));
    await sendMessage(a, { n: 1 }, Array(MAX_FDS_PER_MESSAGE).fill(x));
    await sendMessage(a, { n: 2 });
    await sendMessage(a, { n: 3 }, [y, y, y]);
    const m1 = ch.receive<{ n: number }>(2000);
    const m2 = ch.receive<{ n: number }>(2000);
    const m3 = ch.receive<{ n: number }>(2000);
    expect([m1.body.n, m1.fds.length, m2.body.n, m2.fds.length, m3.body.n, m3.fds.length]).toEqual([1, MAX_FDS_PER_MESSAGE, 2, 0, 3, 3]);
    [...m1.fds, ...m3.fds].forEach((f) => closeSync(f));
    await expect(sendMessage(a, {}, Array(MAX_FDS_PER_MESSAGE + 1).fill(x))).rejects.toThrow(/at most 253/);
  });

  it('a malformed message is an error and its fds are closed', async () => {
    const [a, ch] = pair();
    const [x, y] = native().socketPair();
    cleanup.push(() => [x, y].forEach((f) => closeSync(f)));
    // A length far over the limit, with an fd on it.
    expect(native().sendFds(a, Buffer.from([0xff, 0xff, 0xff, 0xff]), [x])).toBe(4);
    const before = new Set<number>();
    for (let f = 0; f < 1024; f++) if (isOpen(f)) before.add(f);
    expect(() => ch.receive(2000)).toThrow(/out of range/);
    for (let f = 0; f < 1024; f++) if (isOpen(f)) expect(before.has(f) || f === x || f === y).toBe(true);
    // Not JSON.
    const [p, q] = pair();
    const body = Buffer.from('{nope');
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    expect(native().sendFds(p, Buffer.concat([head, body]), [y])).toBe(4 + body.length);
    const open = [...Array(1024).keys()].filter(isOpen).length;
    expect(() => q.receive(2000)).toThrow(SyntaxError);
    expect([...Array(1024).keys()].filter(isOpen).length).toBe(open); // the received copy of y was closed again
  });

  it('a peer that sends nothing, or half a message, times out or ends cleanly', async () => {
    const [a, b] = native().socketPair();
    const ch = FdChannel.fromFd(b);
    try {
      expect(() => ch.receive(200)).toThrow(/ETIMEDOUT|in time/);
      expect(native().sendFds(a, Buffer.from([0, 0, 0, 10, 1, 2]), [])).toBe(6);
    } finally {
      closeSync(a);
    }
    expect(() => ch.receive(2000)).toThrow(/mid-message/);
    ch.close();
  });

  it('says when nobody listens at a path', () => {
    expect(FdChannel.connect('/nonexistent/weft-handover.sock')).toBeUndefined();
  });
});
