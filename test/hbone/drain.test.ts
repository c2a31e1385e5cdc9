// Draining an HBONE server loses nothing (issue #17, hitless upgrades), on both data paths: the old
// server drains while a new one (another process, on the same listening socket) serves, and a pool
// opening CONNECTs at a steady rate sees no failure; a tunnel opened before the drain keeps relaying
// both ways, and with no deadline lasts until its ends close it; a connection still in its TLS
// handshake when the drain starts is served, not cut. The client's side of it: CONNECTs refused
// unprocessed are retried a bounded number of times, so a peer that refuses everything costs a few
// dials, not a loop. Real TLS and real sockets throughout, on 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import http2, { constants } from 'node:http2';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFUSED_RETRIES } from '../../src/hbone/client/pool.ts';
import { HboneError, StreamRefused } from '../../src/hbone/errors.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { createHboneServer, type HboneServer } from '../../src/hbone/node/server.ts';
import { HbonePool, type HboneConnectRequest, type HboneTunnel } from '../../src/hbone/pool.ts';
import type { HboneOutcome, HboneRequestInfo } from '../../src/hbone/server/contract.ts';
import { ALPN, DRAIN_DEADLINE_MS, secureContextOptions, type Credentials } from '../../src/hbone/settings.ts';
import { connectTo, echo, exchange, frontDoor, spiffe, tcpServer, until } from './harness.ts';
import { createCa } from './pki.ts';

type Transport = 'node' | 'native';
const TRANSPORTS: Transport[] = ['node', 'native'];
const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'drain-successor.child.ts');
const LAST_STREAM_MAX = 2 ** 31 - 1;

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let front: Awaited<ReturnType<typeof frontDoor>>;
const cleanup: Array<() => unknown> = [];

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  // An echo whose connections may be reset with their tunnel (the deadline test).
  ({ server: upstream, port: echoPort } = await tcpServer((s) => {
    s.on('error', () => {});
    echo(s);
  }));
  front = await frontDoor();
});

afterAll(async () => {
  for (const f of cleanup.reverse()) await f();
  upstream.close();
  front.close();
});

interface Old {
  server: HboneServer | NativeHboneServer;
  port: number;
  /** When each CONNECT reached onConnect (ms since the epoch). */
  requests: number[];
  outcomes: HboneOutcome[];
  handshakeErrors: string[];
}

async function startOld(kind: Transport): Promise<Old> {
  const t: Old = { server: undefined as unknown as HboneServer, port: 0, requests: [], outcomes: [], handshakeErrors: [] };
  const opts = {
    credentials: () => serverCreds,
    trustDomain: 'cluster.local',
    onConnect: async (req: HboneRequestInfo) => {
      t.requests.push(Date.now());
      return { status: 200 as const, upstream: await connectTo(req.authority.port) };
    },
    onComplete: (o: HboneOutcome) => t.outcomes.push(o),
    onHandshakeError: (_remote: string, reason: string) => t.handshakeErrors.push(reason),
  };
  t.server = kind === 'node' ? createHboneServer(opts) : new NativeHboneServer(opts);
  await t.server.listen({ port: 0, host: '127.0.0.1' });
  t.port = t.server.address().port;
  cleanup.push(() => t.server.drain(0).catch(() => {}));
  return t;
}

/** The listening socket's descriptor, which an old agent hands its successor. */
function listeningFd(s: HboneServer | NativeHboneServer): number {
  const listener = s instanceof NativeHboneServer ? (s as unknown as { server: Server }).server : s.tls;
  const fd = (listener as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('no listening descriptor');
  return fd;
}

interface Successor {
  /** Ends its stdin: it drains and reports how many CONNECTs it served. */
  finish(): Promise<number>;
}

/** The new agent: a child process serving on a duplicate of `fd` (its fd 3). */
async function startSuccessor(kind: Transport, fd: number): Promise<Successor> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', CHILD, kind], {
    stdio: ['pipe', 'pipe', 'pipe', fd],
    env: { ...process.env, WEFT_TEST_CREDENTIALS: JSON.stringify(serverCreds) },
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = setTimeout(() => child.kill('SIGKILL'), 60_000); // a hang bound
  cleanup.push(() => {
    clearTimeout(kill);
    child.kill('SIGKILL');
  });
  await until(() => out.includes('ready\n') || child.exitCode !== null, 30_000, 'successor to listen');
  if (!out.includes('ready\n')) throw new Error(`successor exited: ${err}`);
  return {
    async finish() {
      child.stdin!.end();
      await exited;
      clearTimeout(kill);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new Error(`successor reported nothing: ${err}`);
      return (JSON.parse(line) as { served: number }).served;
    },
  };
}

const pools = {
  node: (o: { maxStreamsPerSession?: number } = {}) => new HbonePool<HboneTunnel>(o),
  native: (o: { maxStreamsPerSession?: number } = {}) => new HbonePool<HboneTunnel>({ ...o, open: nativeSessionOpener() }),
};

function request(port: number, dials?: { n: number }): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: spiffe('shop', 'web'), dstIdentity: spiffe('shop', 'cart'), dstAddress: '127.0.0.1' },
    port,
    authority: `127.0.0.1:${echoPort}`,
    headers: {},
    credentials: clientCreds,
    dial: () => {
      if (dials) dials.n++;
      return connectTo(port);
    },
  };
}

/** One app connection through a fresh CONNECT: `text` there and back, then both ends close. */
async function oneTunnel(pool: HbonePool<HboneTunnel>, req: HboneConnectRequest, text: string): Promise<void> {
  const { app, agent } = await front.connection();
  try {
    const t = await pool.connect(req);
    const relayed = t.relay(agent);
    const back = (await exchange(app, text)).toString();
    if (back !== text) throw new Error(`echoed ${JSON.stringify(back)}, not ${JSON.stringify(text)}`);
    const r = await relayed;
    if (r.error) throw new Error(`tunnel: ${r.error}`);
  } catch (e) {
    app.destroy();
    agent.destroy();
    throw e;
  }
}

/** Writes `text` on a tunnel's app socket and waits until the upstream's echo of it is back. */
function roundTrip(app: Socket, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (c: Buffer) => {
      got += c.toString();
      if (got.length < text.length) return;
      app.off('data', onData);
      if (got === text) resolve();
      else reject(new Error(`echoed ${JSON.stringify(got)}, not ${JSON.stringify(text)}`));
    };
    app.on('data', onData);
    app.write(text);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a drained HBONE server hands over to its successor on the same socket', () => {
  const pairs = TRANSPORTS.flatMap((server) => TRANSPORTS.map((client) => [server, client] as const));
  it.each(pairs)('%s server, %s client: no failed CONNECT at 200/s; a tunnel opened before lasts until its ends close it', async (kind, client) => {
    const old = await startOld(kind);
    // Small sessions, so a burst spreads over several of them, all of which the drain refuses.
    const pool = pools[client]({ maxStreamsPerSession: 4 });
    cleanup.push(() => pool.close(true));
    const dials = { n: 0 };
    const req = request(old.port, dials);

    // Before the successor exists, so all of this is on the old server.
    const { app: longApp, agent: longAgent } = await front.connection();
    const long = await pool.connect(req);
    const longRelayed = long.relay(longAgent);
    await roundTrip(longApp, 'before the drain;');
    await Promise.all(Array.from({ length: 8 }, (_, i) => oneTunnel(pool, req, `warm ${i}`)));
    expect(pool.stats().sessions).toBeGreaterThan(1);

    const successor = await startSuccessor(kind, listeningFd(old.server));

    let ok = 0;
    const failures: string[] = [];
    const attempts: Promise<void>[] = [];
    let n = 0;
    const load = setInterval(() => {
      attempts.push(oneTunnel(pool, req, `connect ${n++}`).then(() => void ok++, (e: Error) => void failures.push(e.message)));
    }, 5);
    await sleep(1000);

    const drainAt = Date.now();
    let drained = false;
    const draining = old.server.drain(Infinity).then(() => (drained = true));
    await sleep(1500); // past the second GOAWAY (one round trip, or the notice wait at most)
    clearInterval(load);
    await Promise.all(attempts);
    // Past the default deadline too: with none, the tunnel opened before the drain still relays
    // both ways, long after the drain's second GOAWAY.
    await sleep(Math.max(0, drainAt + DRAIN_DEADLINE_MS + 500 - Date.now()));
    await roundTrip(longApp, 'during the drain;');

    expect(failures).toEqual([]);
    expect(ok).toBe(n);
    expect(drained).toBe(false); // no deadline: the long tunnel holds its session open
    expect(old.server.stats().sessions).toBe(1);

    const served = await successor.finish();
    expect(served).toBeGreaterThan(0);
    console.log(
      `${kind} server, ${client} client: ${n} CONNECTs, 0 failed; old server took ${old.requests.filter((t) => t >= drainAt).length} after the drain began, successor ${served}; ${dials.n} dials`,
    );

    // Its ends close it; then the drain is done.
    const longEnd = exchange(longApp, 'the end');
    expect((await longEnd).toString()).toBe('the end');
    expect((await longRelayed).error).toBeUndefined();
    await until(() => drained, 10_000, 'drain to end with the last session');
    await draining;
    expect(old.server.stats()).toEqual({ sessions: 0, streams: 0 });
    expect(old.handshakeErrors).toEqual([]);
  });
});

describe('a drain lets a connection still in its TLS handshake finish', () => {
  it.each(TRANSPORTS)('%s server: the handshake completes, a CONNECT sent with the preface is answered, then GOAWAY', async (kind) => {
    const old = await startOld(kind);
    const accepted = kind === 'node' ? new Promise((r) => (old.server as HboneServer).tls.once('connection', r)) : undefined;
    const raw = await connectTo(old.port);
    cleanup.push(() => raw.destroy());
    if (accepted) await accepted;
    else await until(() => old.server.stats().sessions === 1, 5000, 'the relay to take the connection');

    const drained = old.server.drain(10_000);
    const secure = tls.connect({ socket: raw, ...secureContextOptions(clientCreds), ALPNProtocols: ALPN, checkServerIdentity: () => undefined });
    await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    const session = http2.connect(`https://127.0.0.1:${old.port}`, { createConnection: () => secure });
    session.on('error', () => {});
    const goaways: number[] = [];
    session.on('goaway', (_code: number, last: number) => goaways.push(last));
    // Sent right behind the preface, before the server's SETTINGS or GOAWAY can have arrived.
    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }, { endStream: false });
    stream.on('error', () => {});
    const answer = await new Promise<number>((resolve) => {
      stream.once('response', (h) => resolve(Number(h[':status'])));
      stream.once('close', () => resolve(-stream.rstCode!));
    });
    if (kind === 'native') {
      expect(answer).toBe(200); // read before the notice went out: served
      stream.end('through a drained session');
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      await new Promise((r) => stream.once('end', r));
      expect(Buffer.concat(chunks).toString()).toBe('through a drained session');
    } else {
      // Node's first GOAWAY is a full one: nghttp2 ignores the stream, and the second refuses it
      // (REFUSED_STREAM, which a pool retries). Never a failure of another kind.
      expect([200, -constants.NGHTTP2_REFUSED_STREAM]).toContain(answer);
      if (answer === 200) stream.end();
    }
    await until(() => goaways.length > 0, 5000, 'GOAWAY');
    expect(goaways[0]).toBe(LAST_STREAM_MAX); // the notice first
    await drained;
    session.destroy();
    expect(old.handshakeErrors).toEqual([]);
  });
});

/** A TCP proxy to `port` whose server-to-client direction can be held back (a slow path to the client). */
async function gatedProxy(port: number): Promise<{ port: number; hold: () => void; release: () => void }> {
  let held = false;
  const queued: Array<() => void> = [];
  const server = net.createServer((client) => {
    const up = net.connect({ port, host: '127.0.0.1' });
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
    client.pipe(up);
    up.on('data', (c: Buffer) => (held ? queued.push(() => client.write(c)) : client.write(c)));
    up.on('end', () => (held ? queued.push(() => client.end()) : client.end()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => server.close());
  return {
    port: (server.address() as AddressInfo).port,
    hold: () => (held = true),
    release: () => {
      held = false;
      for (const f of queued.splice(0)) f();
    },
  };
}

describe('a drain serves the streams a client sent before it saw the first GOAWAY', () => {
  it.each(TRANSPORTS)('%s server: a CONNECT that crosses the notice on the wire is served (native) or refused, never failed (node)', async (kind) => {
    const old = await startOld(kind);
    const proxy = await gatedProxy(old.port);
    const secure = tls.connect({ port: proxy.port, host: '127.0.0.1', ...secureContextOptions(clientCreds), ALPNProtocols: ALPN, checkServerIdentity: () => undefined });
    await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    const session = http2.connect(`https://127.0.0.1:${proxy.port}`, { createConnection: () => secure });
    session.on('error', () => {});
    cleanup.push(() => session.destroy());
    await new Promise((r) => session.once('remoteSettings', r));
    const goaways: number[] = [];
    session.on('goaway', (_code: number, last: number) => goaways.push(last));

    // The server's frames are held on their way: the notice is out, but the client has not seen it.
    proxy.hold();
    const drained = old.server.drain(10_000);
    await sleep(200);
    const stream = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }, { endStream: false });
    stream.on('error', () => {});
    const answer = new Promise<number>((resolve) => {
      stream.once('response', (h) => resolve(Number(h[':status'])));
      stream.once('close', () => resolve(-stream.rstCode!));
    });
    await until(() => old.requests.length === 1 || kind === 'node', 5000, 'the CONNECT to reach the server');
    await sleep(200);
    proxy.release();

    if (kind === 'native') {
      expect(await answer).toBe(200); // served, and the final GOAWAY names it
      const echoed = new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.once('end', () => resolve(Buffer.concat(chunks).toString()));
      });
      stream.end('sent before the notice was seen');
      expect(await echoed).toBe('sent before the notice was seen');
      await drained;
      expect(goaways).toEqual([LAST_STREAM_MAX, stream.id]);
    } else {
      // Node's first GOAWAY is a full one (drainSession, node/server.ts): the stream is ignored, then
      // refused by the second, which a pool retries elsewhere. Not served, but never failed.
      expect(await answer).toBe(-constants.NGHTTP2_REFUSED_STREAM);
      await drained;
      expect(goaways).toEqual([LAST_STREAM_MAX, 0]);
    }
  });
});

describe('drain deadlines', () => {
  it.each(TRANSPORTS)('%s server: rejects a deadline that is not 0..2^31-1 ms or Infinity, naming it', async (kind) => {
    const old = await startOld(kind);
    for (const bad of [-1, Number.NaN, 2 ** 31, -Infinity]) {
      await expect(old.server.drain(bad)).rejects.toThrow(new RegExp(`deadlineMs .* not ${String(bad)}`));
    }
    await old.server.drain(Infinity); // nothing open: done at once
  });

  it.each(TRANSPORTS)('%s server: a finite deadline still ends a tunnel that outlives it', async (kind) => {
    const old = await startOld(kind);
    const pool = pools[kind]();
    cleanup.push(() => pool.close(true));
    const { app, agent } = await front.connection();
    app.on('error', () => {}); // reset with its tunnel
    const tun = await pool.connect(request(old.port));
    const relayed = tun.relay(agent);
    await roundTrip(app, 'open');
    await old.server.drain(300);
    // Node's client: a reset after our FIN once left the tunnel unreported forever (tunnel.ts).
    expect((await relayed).error).toBeDefined();
    app.destroy();
  });
});

/** A hostile HBONE server (Node's tls and http2) that refuses per `refuse`; counts sessions. */
async function hostile(onSession: (s: http2.ServerHttp2Session, n: number) => void, onStream: (s: http2.ServerHttp2Stream, n: number) => void) {
  let sessions = 0;
  const server = http2.createSecureServer({ ...secureContextOptions(serverCreds), requestCert: true, ALPNProtocols: ALPN });
  server.on('session', (s) => {
    s.on('error', () => {});
    onSession(s, ++sessions);
  });
  server.on('stream', (st) => {
    st.on('error', () => {});
    onStream(st, sessions);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => server.close());
  return { port: (server.address() as AddressInfo).port, sessions: () => sessions };
}

describe('the pool retries CONNECTs refused unprocessed, a bounded number of times', () => {
  it.each(TRANSPORTS)('%s client: a peer that GOAWAYs every session at once costs REFUSED_RETRIES + 1 dials, then a StreamRefused', async (client) => {
    const h = await hostile((s) => s.goaway(constants.NGHTTP2_NO_ERROR), () => {});
    const pool = pools[client]();
    cleanup.push(() => pool.close(true));
    const dials = { n: 0 };
    const e = await pool.connect(request(h.port, dials)).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(StreamRefused);
    expect((e as HboneError).kind).toBe('stream');
    expect(dials.n).toBe(REFUSED_RETRIES + 1);
  });

  it.each(TRANSPORTS)('%s client: a peer that refuses every stream (REFUSED_STREAM) is bounded too', async (client) => {
    const h = await hostile(() => {}, (st) => st.close(constants.NGHTTP2_REFUSED_STREAM));
    const pool = pools[client]();
    cleanup.push(() => pool.close(true));
    const dials = { n: 0 };
    const e = await pool.connect(request(h.port, dials)).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(StreamRefused);
    expect(dials.n).toBe(REFUSED_RETRIES + 1);
  });

  it.each(TRANSPORTS)('%s client: refused by REFUSED_RETRIES sessions in turn (several draining servers), the next one serves it', async (client) => {
    const h = await hostile(() => {}, (st, n) => (n <= REFUSED_RETRIES ? st.close(constants.NGHTTP2_REFUSED_STREAM) : st.respond({ ':status': 200 })));
    const pool = pools[client]();
    cleanup.push(() => pool.close(true));
    const t = await pool.connect(request(h.port));
    expect(t.status).toBe(200);
    expect(h.sessions()).toBe(REFUSED_RETRIES + 1);
  });

  it.each(TRANSPORTS)('%s client: a stream above a GOAWAY\'s last stream id is refused (REFUSED_STREAM from nghttp2) and retried', async (client) => {
    // The first stream of each session is answered; a second one on it gets GOAWAY(last stream 1).
    const h = await hostile(() => {}, (st) => (st.id === 1 ? st.respond({ ':status': 200 }) : st.session!.goaway(constants.NGHTTP2_NO_ERROR, 1)));
    const pool = pools[client]();
    cleanup.push(() => pool.close(true));
    const req = request(h.port);
    expect((await pool.connect(req)).status).toBe(200);
    expect((await pool.connect(req)).status).toBe(200);
    expect(h.sessions()).toBe(2);
  });
});
