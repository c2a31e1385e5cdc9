// Early attach (issue #18): the app's socket goes to the native relay with the CONNECT
// (HboneConnectRequest.appFd), and the relay relays from it as soon as the 200 arrives, without a
// round trip to JavaScript. Before a 200 the relay's duplicate is never read, and on any other outcome
// (a refusal status, REFUSED_STREAM, the response deadline, a session that ends or never answers) it
// is only closed: JavaScript's fd stays open and usable, to retry or reset. Descriptors are counted
// per socket (the /proc/self/fd entries that point at it), so nothing leaks and nothing closes twice.
import { closeSync, readdirSync, readlinkSync } from 'node:fs';
import http2, { constants } from 'node:http2';
import type { Server, Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { listenerInNetns, sockName } from '../../../src/bpf/index.ts';
import { relayAddon } from '../../../src/hbone/native/addon.ts';
import { nativeSessionOpener } from '../../../src/hbone/native/client.ts';
import { AcceptedFd, NativeListener } from '../../../src/hbone/native/listener.ts';
import { NativeHboneServer } from '../../../src/hbone/native/server.ts';
import { HbonePool, type HboneConnectRequest, type HboneTunnel } from '../../../src/hbone/pool.ts';
import type { ConnectDecision, HboneRequestInfo } from '../../../src/hbone/node/server.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';
import { connectTo, echo, spiffe, tcpServer, until } from '../harness.ts';
import { createCa } from '../pki.ts';

const SERVER_ID = spiffe('shop', 'cart');
const CLIENT_ID = spiffe('shop', 'web');

let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let native: NativeHboneServer;
let nativePort: number;
let decide: (r: HboneRequestInfo) => Promise<ConnectDecision>;
/** Echoes (the upstream of every tunnel here); a tunnel reset resets it, which is no error here. */
const echoOf = (s: Socket) => {
  s.on('error', () => {});
  echo(s);
};
const echoDecision = async (req: HboneRequestInfo): Promise<ConnectDecision> => ({ status: 200, upstream: await connectTo(req.authority.port) });
/** A TLS HTTP/2 server that answers CONNECT as `hostile` says: a hostile or broken HBONE server. */
let hostile: http2.Http2SecureServer;
let hostilePort: number;
let hostileMode: 'refuse' | 'refuse-once' | 'echo' | 'silent' | 'ok-then-reset' = 'silent';
let listenFd: number;
let listenPort: number;
let listener: NativeListener;
const accepted: AcceptedFd[] = [];

beforeAll(async () => {
  const ca = await createCa();
  const serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer(echoOf));
  native = new NativeHboneServer({ credentials: () => serverCreds, trustDomain: 'cluster.local', onConnect: (r) => decide(r) });
  await native.listen({ port: 0, host: '127.0.0.1' });
  nativePort = native.address().port;
  hostile = http2.createSecureServer({ key: serverCreds.key, cert: serverCreds.certChain, ca: serverCreds.root, requestCert: true, rejectUnauthorized: true });
  hostile.on('stream', (s) => {
    s.on('error', () => {});
    if (hostileMode === 'refuse') s.close(constants.NGHTTP2_REFUSED_STREAM);
    else if (hostileMode === 'refuse-once') {
      hostileMode = 'echo';
      s.close(constants.NGHTTP2_REFUSED_STREAM);
    } else if (hostileMode === 'echo') {
      s.respond({ ':status': 200 });
      s.pipe(s);
    }
    else if (hostileMode === 'ok-then-reset') {
      s.respond({ ':status': 200 });
      setTimeout(() => s.close(constants.NGHTTP2_INTERNAL_ERROR), 50);
    }
  });
  hostile.on('sessionError', () => {});
  await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', r));
  hostilePort = (hostile.address() as { port: number }).port;
  listenFd = listenerInNetns(null, '127.0.0.1', 0);
  listenPort = sockName(listenFd).port;
  listener = new NativeListener(listenFd, (c) => accepted.push(c));
});

afterAll(async () => {
  await listener.close();
  closeSync(listenFd);
  await native.drain(100);
  hostile.close();
  upstream.close();
});

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  decide = echoDecision;
  for (const f of cleanup.splice(0).reverse())
    try {
      await f();
    } catch {}
});

function pool(opts: { connectTimeoutMs?: number } = {}): HbonePool<HboneTunnel> {
  const p = new HbonePool<HboneTunnel>({ open: nativeSessionOpener(), ...opts });
  cleanup.push(() => p.close(true));
  return p;
}

/** An app connection: the app's socket, and the agent's end as the relay thread accepted it. */
async function appConnection(): Promise<{ app: Socket; agent: AcceptedFd }> {
  const before = accepted.length;
  const app = await connectTo(listenPort);
  app.on('error', () => {});
  await until(() => accepted.length > before, 5000, 'the native listener to accept');
  const agent = accepted.at(-1)!;
  cleanup.push(() => app.destroy(), () => agent.close());
  return { app, agent };
}

/** How many descriptors of this process point at the socket behind fd (JavaScript's own is one). */
function copies(fd: number, target = readlinkSync(`/proc/self/fd/${fd}`)): number {
  let n = 0;
  for (const e of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${e}`) === target) n++;
    } catch {} // the directory's own fd, gone by now
  }
  return n;
}

function request(port: number, agent: AcceptedFd | undefined, authority = `127.0.0.1:${echoPort}`): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: CLIENT_ID, dstIdentity: SERVER_ID, dstAddress: '127.0.0.1' },
    port,
    authority,
    headers: { forwarded: 'for="10.0.0.1:1234"' },
    credentials: clientCreds,
    dial: () => connectTo(port),
    appFd: agent?.fd,
  };
}

/** Resolves with the first `n` bytes the socket reads, or rejects after ms. */
function readBytes(s: Socket, n: number, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`read ${JSON.stringify(got)} of ${n} bytes in ${ms} ms`)), ms);
    const on = (d: Buffer) => {
      got += d.toString();
      if (got.length < n) return;
      clearTimeout(t);
      s.off('data', on);
      s.pause();
      resolve(got);
    };
    s.on('data', on);
    s.resume();
  });
}

function ended(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    if (s.readableEnded) return resolve('end');
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.once('end', () => resolve('end'));
    s.resume();
  });
}

let gate: () => void = () => {};
/** The native server answers 200 (to the echo upstream) only once `gate()` is called. */
function gated(decision: (r: HboneRequestInfo) => Promise<ConnectDecision> = echoDecision): void {
  const open = new Promise<void>((r) => (gate = r));
  decide = async (r) => {
    await open;
    return decision(r);
  };
}

describe('early attach on the native client', () => {
  it('relays the bytes the app wrote before the 200, and the reply, with no relay() call yet', async () => {
    const p = pool();
    const { app, agent } = await appConnection();
    gated();
    const connecting = p.connect(request(nativePort, agent));
    await until(() => copies(agent.fd) === 2, 5000, 'the relay to hold a duplicate of the app socket');
    app.write('before the 200');
    gate();
    // The relay attached by itself: the echo comes back before JavaScript has handed anything over.
    expect(await readBytes(app, 14)).toBe('before the 200');
    const t = await connecting;
    const sock = readlinkSync(`/proc/self/fd/${agent.fd}`);
    const relayed = t.relay(agent.take());
    expect(copies(-1, sock)).toBe(1); // the relay's; JavaScript closed its own
    app.end('and after');
    const rest = await new Promise<string>((resolve) => {
      let s = '';
      app.on('data', (d: Buffer) => (s += d.toString()));
      app.once('end', () => resolve(s));
      app.resume();
    });
    expect(rest).toBe('and after');
    const r = await relayed;
    expect(r).toEqual({ sent: 23, received: 23, error: undefined });
    await until(() => relayAddon().stats().streams === 0, 5000, 'the stream to end');
  });

  it('on a refusal status closes only its duplicate: the fd is retried, unread, on another request', async () => {
    const p = pool();
    const { app, agent } = await appConnection();
    gated(async () => ({ status: 401, reason: 'denied' }));
    const denied = p.connect(request(nativePort, agent));
    await until(() => copies(agent.fd) === 2, 5000, 'the relay to hold a duplicate');
    app.write('kept for the retry');
    gate();
    await expect(denied).rejects.toMatchObject({ kind: 'status', status: 401 });
    expect(copies(agent.fd)).toBe(1);
    // Nothing was read from it, nothing reset it: the same fd carries the next tunnel whole.
    decide = echoDecision;
    const t = await p.connect(request(nativePort, agent));
    const relayed = t.relay(agent.take());
    app.end();
    expect(await readBytes(app, 18)).toBe('kept for the retry');
    expect(await relayed).toEqual({ sent: 18, received: 18, error: undefined });
  });

  it('on REFUSED_STREAM before a response closes its duplicates, and the app socket still works', async () => {
    hostileMode = 'refuse';
    const p = pool();
    const { app, agent } = await appConnection();
    const err = await p.connect(request(hostilePort, agent)).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/stream closed before a response \(code 7\)/); // retried, then given up
    expect(copies(agent.fd)).toBe(1);
    const s = agent.toSocket();
    cleanup.push(() => s.destroy());
    app.write('still here');
    expect(await readBytes(s, 10)).toBe('still here');
    s.write('and back');
    expect(await readBytes(app, 8)).toBe('and back');
  });

  it('retries the same fd after REFUSED_STREAM on another session, which relays what the app wrote before', async () => {
    hostileMode = 'refuse-once';
    const p = pool();
    const { app, agent } = await appConnection();
    app.write('written while refused');
    const t = await p.connect(request(hostilePort, agent));
    expect(hostileMode).toBe('echo'); // refused once, then taken on a new session
    const relayed = t.relay(agent.take());
    expect(await readBytes(app, 21)).toBe('written while refused');
    app.end();
    expect(await ended(app)).toBe('end');
    expect(await relayed).toMatchObject({ sent: 21, received: 21 });
  });

  it('on the response deadline cancels, closing its duplicate and leaving the connection alone', async () => {
    hostileMode = 'silent';
    const p = pool({ connectTimeoutMs: 1000 });
    const { app, agent } = await appConnection();
    const connecting = p.connect(request(hostilePort, agent));
    await until(() => copies(agent.fd) === 2, 5000, 'the relay to hold a duplicate');
    const err = await connecting.catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: 'timeout' });
    await until(() => copies(agent.fd) === 1, 5000, 'the relay to close its duplicate');
    const s = agent.toSocket();
    cleanup.push(() => s.destroy());
    app.write('x');
    expect(await readBytes(s, 1)).toBe('x');
  });

  it('against a server that never answers, the session ending closes the duplicate', async () => {
    hostileMode = 'silent';
    const p = pool();
    const { agent } = await appConnection();
    const connecting = p.connect(request(hostilePort, agent)).catch((e: unknown) => e);
    await until(() => copies(agent.fd) === 2, 5000, 'the relay to hold a duplicate');
    p.close(true);
    expect(await connecting).toBeInstanceOf(Error);
    await until(() => copies(agent.fd) === 1, 5000, 'the relay to close its duplicate');
    await until(() => relayAddon().stats().streams === 0, 5000, 'the stream to end');
  });

  it('against a server that answers 200 then resets, ends the app connection and leaks nothing', async () => {
    hostileMode = 'ok-then-reset';
    const p = pool();
    const { app, agent } = await appConnection();
    const fd = agent.fd;
    const inode = readlinkSync(`/proc/self/fd/${fd}`);
    const t = await p.connect(request(hostilePort, agent));
    const r = await t.relay(agent.take());
    expect(r.error).toMatch(/stream reset \(code 2\)/);
    // Node ends its side of the stream before the reset: a FIN first.
    expect(await ended(app)).toBe('end');
    // No descriptor of this process points at the app's connection any more.
    await until(() => readdirSync('/proc/self/fd').every((e) => {
      try {
        return readlinkSync(`/proc/self/fd/${e}`) !== inode;
      } catch {
        return true;
      }
    }), 5000, 'every descriptor of the app connection to be closed');
  });

  it('closes the duplicate of a request on a session that does not exist, and refuses a bad fd', async () => {
    const { agent } = await appConnection();
    relayAddon().request(0x7fffffff, [':method', 'CONNECT', ':authority', '127.0.0.1:1'], agent.fd);
    await until(() => copies(agent.fd) === 1, 5000, 'the relay to close its duplicate');
    expect(() => relayAddon().request(0x7fffffff, [], -1)).toThrow(/fd must be a file descriptor/);
    expect(() => relayAddon().request(0x7fffffff, [], 'x' as never)).toThrow(/fd must be a file descriptor/);
  });

  it('falls back to the late attach when the fd cannot be duplicated', async () => {
    const p = pool();
    const { app, agent } = await appConnection();
    const t = await p.connect({ ...request(nativePort, undefined), appFd: 0x7ffffff0 }); // no such fd: dup fails
    expect(copies(agent.fd)).toBe(1);
    const relayed = t.relay(agent.take());
    app.end('late');
    expect(await readBytes(app, 4)).toBe('late');
    expect(await relayed).toEqual({ sent: 4, received: 4, error: undefined });
  });

  it('without an fd up front, attaches late as before', async () => {
    const p = pool();
    const { app, agent } = await appConnection();
    const t = await p.connect(request(nativePort, undefined));
    expect(copies(agent.fd)).toBe(1);
    const relayed = t.relay(agent.take());
    app.end('late');
    expect(await readBytes(app, 4)).toBe('late');
    expect(await relayed).toEqual({ sent: 4, received: 4, error: undefined });
  });

  it.each(['reset', 'closed'] as const)('when the app %s its connection before the 200, reports it as the late attach does', async (how) => {
    const results = [];
    for (const early of [false, true]) {
      const p = pool();
      const { app, agent } = await appConnection();
      gated();
      const connecting = p.connect(request(nativePort, early ? agent : undefined));
      if (how === 'reset') app.resetAndDestroy();
      else app.end('bye', () => app.destroy());
      await new Promise((r) => setTimeout(r, 50));
      gate();
      const t = await connecting;
      const r = await t.relay(agent.take());
      results.push(r);
    }
    expect(results[1]).toEqual(results[0]);
    if (how === 'reset') expect(results[0]).toMatchObject({ sent: 0, received: 0, error: 'tcp: ECONNRESET' });
    else expect(results[0]).toMatchObject({ sent: 3 });
  });
});
