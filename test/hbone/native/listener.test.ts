// Accepting on the relay thread (native/relay/listener.cc, src/hbone/native/listener.ts): each
// connection reaches JavaScript as an fd with its peer; unlisten stops accepting and leaves the
// listening socket open for its next owner (an agent upgrade hands it on), with what is queued still
// queued; a burst is accepted a bounded number per wake-up, and all of it is served; a refused fd is
// a reset; bad input is refused at the call.
import { closeSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { listenerInNetns, socketInNetns, sockName } from '../../../src/bpf/index.ts';
import { relayAddon } from '../../../src/hbone/native/addon.ts';
import { AcceptedFd, NativeListener } from '../../../src/hbone/native/listener.ts';
import { socketFromFd } from '../../../src/hbone/fd-socket.ts';
import { connectTo, until } from '../harness.ts';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse())
    try {
      await f();
    } catch {}
});

/** A listening socket on 127.0.0.1 (an ephemeral port), closed after the test. */
function listening(): { fd: number; port: number } {
  const fd = listenerInNetns(null, '127.0.0.1', 0);
  cleanup.push(() => closeSync(fd));
  return { fd, port: sockName(fd).port };
}

function listen(fd: number, onConn: (c: AcceptedFd, index: number) => void, batch?: number): NativeListener {
  const l = new NativeListener(fd, onConn, { batch });
  cleanup.push(() => l.close());
  return l;
}

function dial(port: number): Promise<Socket> {
  return connectTo(port).then((s) => {
    s.on('error', () => {});
    cleanup.push(() => s.destroy());
    return s;
  });
}

/** How a client's connection ended: 'reset', 'end', or still 'open' after ms. */
function ending(s: Socket, ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve('open'), ms);
    const done = (how: string) => {
      clearTimeout(t);
      resolve(how);
    };
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNRESET' ? 'reset' : (e.code ?? e.message)));
    s.once('end', () => done('end'));
    s.resume();
  });
}

describe('native listener', () => {
  it('accepts: the fd is the connection, with the peer address and port the client has', async () => {
    const { fd, port } = listening();
    const got: AcceptedFd[] = [];
    listen(fd, (c) => got.push(c));
    const client = await dial(port);
    await until(() => got.length === 1, 5000, 'the accept');
    const c = got[0]!;
    expect({ address: c.remoteAddress, port: c.remotePort }).toEqual({ address: '127.0.0.1', port: client.localPort });
    // The fd is the connection itself: bytes written to it reach the client, and back.
    const s = socketFromFd(c.take());
    cleanup.push(() => s.destroy());
    expect(s.remotePort).toBe(client.localPort);
    s.resume();
    s.pipe(s);
    const echoed = new Promise<string>((r) => client.once('data', (d: Buffer) => r(d.toString())));
    client.write('hello');
    expect(await echoed).toBe('hello');
  });

  it('unlisten stops accepting, leaves the fd open, and what waits is accepted by the next owner', async () => {
    const { fd, port } = listening();
    const got: AcceptedFd[] = [];
    const l = listen(fd, (c) => got.push(c));
    await dial(port);
    await until(() => got.length === 1, 5000, 'the first accept');
    got.splice(0).forEach((c) => c.close());
    await l.close();
    // Still a listening socket: the kernel completes the handshake into its backlog.
    const waiting = await dial(port);
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toEqual([]); // nothing accepted it after unlisten
    // The next owner (a Node server here, as a new agent on --data-path node) gets the waiting connection.
    const server = net.createServer((s) => s.end('from the next owner'));
    cleanup.push(() => server.close());
    await new Promise<void>((r) => server.listen({ fd }, r));
    const data = await new Promise<string>((r) => waiting.once('data', (d: Buffer) => r(d.toString())));
    expect(data).toBe('from the next owner');
  });

  it('a flood of connects is accepted at most `batch` per wake-up, and every one is served', async () => {
    const { fd, port } = listening();
    // All of them wait in the backlog first, so the relay finds far more than a batch at once.
    const clients = await Promise.all(Array.from({ length: 200 }, () => dial(port)));
    const indexes: number[] = [];
    const peers = new Set<number>();
    listen(
      fd,
      (c, index) => {
        indexes.push(index);
        peers.add(c.remotePort);
        c.close();
      },
      4,
    );
    await until(() => indexes.length === 200, 10_000, 'every connection accepted');
    expect(Math.max(...indexes)).toBe(3);
    expect(indexes.filter((i) => i === 0).length).toBeGreaterThanOrEqual(50); // 200 / 4 wake-ups at least
    expect(peers).toEqual(new Set(clients.map((c) => c.localPort)));
  });

  it('an fd refused is reset, and once handed on it is never closed again', async () => {
    const { fd, port } = listening();
    const got: AcceptedFd[] = [];
    listen(fd, (c) => got.push(c));
    const client = await dial(port);
    await until(() => got.length === 1, 5000, 'the accept');
    const ended = ending(client);
    got[0]!.reset();
    expect(await ended).toBe('reset');
    got[0]!.reset(); // a second refusal is a no-op, not a close of whatever holds that number now
    expect(() => got[0]!.take()).toThrow(/already handed on or closed/);
  });

  it('refuses bad input at the call', () => {
    expect(() => relayAddon().listen(-1, 4)).toThrow(/fd must be a file descriptor/);
    const { fd } = listening();
    expect(() => relayAddon().listen(fd, 0)).toThrow(/batch must be a whole number from 1 to 1024/);
    expect(() => relayAddon().listen(fd, 1.5)).toThrow(/batch must be a whole number/);
    const unbound = socketInNetns(null, { family: 4 }); // a socket, but nobody listens on it
    cleanup.push(() => closeSync(unbound));
    expect(() => relayAddon().listen(unbound, 4)).toThrow(`fd ${unbound} is not a listening socket`);
    expect(() => relayAddon().resetFd(-3)).toThrow(/fd must be a file descriptor/);
  });
});
