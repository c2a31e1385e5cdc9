// The native relay (native/relay, weft_relay.node) against Node's own HBONE, both ways and with
// itself: every pairing of client and server carries bytes both ways with half-close, counts them,
// passes denials through as the status, and refuses the wrong peer at the TLS layer.
import { createHash, randomBytes } from 'node:crypto';
import type { Server, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HboneError } from '../../src/hbone/errors.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { relayAddon } from '../../src/hbone/native/addon.ts';
import { nativeRelay } from '../../src/hbone/native/pipe.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { HbonePool, type HboneConnectRequest, type HboneTunnel } from '../../src/hbone/pool.ts';
import type { ConnectDecision, HboneOutcome, HboneRequestInfo } from '../../src/hbone/node/server.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { connectTo, echo, exchange, frontDoor, spiffe, startHbone, tcpServer, until, type TestServer } from './harness.ts';
import { createCa } from './pki.ts';

const SERVER_ID = spiffe('shop', 'cart');
const CLIENT_ID = spiffe('shop', 'web');

let clientCreds: Credentials;
let strangerCreds: Credentials;
let serverCreds: Credentials;
let upstream: Server;
let echoPort: number;
let front: Awaited<ReturnType<typeof frontDoor>>;
let jsServer: TestServer;
const native: { server: NativeHboneServer; port: number; outcomes: HboneOutcome[]; handshakeErrors: string[]; decide: (r: HboneRequestInfo) => Promise<ConnectDecision> } = {
  server: undefined as unknown as NativeHboneServer,
  port: 0,
  outcomes: [],
  handshakeErrors: [],
  decide: async (req) => ({ status: 200, upstream: await connectTo(req.authority.port) }),
};
const pools: HbonePool<HboneTunnel>[] = [];

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  strangerCreds = await (await createCa('another root')).issue('shop', 'web');
  jsServer = await startHbone(() => serverCreds);
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  native.server = new NativeHboneServer({
    credentials: () => serverCreds,
    trustDomain: 'cluster.local',
    onConnect: (req) => native.decide(req),
    onComplete: (o) => native.outcomes.push(o),
    onHandshakeError: (_r, reason) => native.handshakeErrors.push(reason),
  });
  await native.server.listen({ port: 0, host: '127.0.0.1' });
  native.port = native.server.address().port;
  front = await frontDoor();
});

afterAll(async () => {
  for (const p of pools) p.close(true);
  await jsServer.hbone.drain(100);
  await native.server.drain(100);
  upstream.close();
  front.close();
});

function request(port: number, creds = clientCreds, dstIdentity = SERVER_ID): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: CLIENT_ID, dstIdentity, dstAddress: '127.0.0.1' },
    port,
    authority: `127.0.0.1:${echoPort}`,
    headers: { forwarded: 'for="10.0.0.1:1234"' },
    credentials: creds,
    dial: () => connectTo(port),
  };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const clients = {
  node: () => new HbonePool<HboneTunnel>(),
  native: () => new HbonePool<HboneTunnel>({ open: nativeSessionOpener() }),
};
const servers = { node: () => jsServer.port, native: () => native.port };

describe.each(['node', 'native'] as const)('%s client', (client) => {
  describe.each(['node', 'native'] as const)('to %s server', (server) => {
    it('carries 4 MiB both ways with half-close, and counts the bytes', async () => {
      const pool = clients[client]();
      pools.push(pool);
      const outcomes = server === 'node' ? jsServer.outcomes : native.outcomes;
      const before = outcomes.length;
      const t = await pool.connect(request(servers[server]()));
      const { app, agent } = await front.connection();
      const relayed = t.relay(agent);
      const data = randomBytes(4 * 1024 * 1024);
      const back = await exchange(app, data);
      expect(back.length).toBe(data.length);
      expect(sha(back)).toBe(sha(data));
      const r = await relayed;
      expect(r).toMatchObject({ sent: data.length, received: data.length });
      expect(r.error).toBeUndefined();
      await until(() => outcomes.length > before, 5000, 'server outcome');
      expect(outcomes.at(-1)).toMatchObject({ status: 200, sent: data.length, received: data.length, peer: { namespace: 'shop', serviceAccount: 'web' } });
      expect(outcomes.at(-1)!.headers.forwarded).toBe('for="10.0.0.1:1234"');
    });

    it('passes a denial through as the status', async () => {
      const pool = clients[client]();
      pools.push(pool);
      const [jsDecide, nativeDecide] = [jsServer.decide, native.decide];
      const deny = async (_r: HboneRequestInfo): Promise<ConnectDecision> => ({ status: 401, reason: 'denied' });
      if (server === 'node') jsServer.decide = deny;
      else native.decide = deny;
      try {
        const err = await pool.connect(request(servers[server]())).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(HboneError);
        expect(err).toMatchObject({ kind: 'status', status: 401 });
      } finally {
        [jsServer.decide, native.decide] = [jsDecide, nativeDecide];
      }
    });

    it('refuses a server with another identity, and a client from another root', async () => {
      const pool = clients[client]();
      pools.push(pool);
      const wrongId = await pool.connect(request(servers[server](), clientCreds, spiffe('shop', 'other'))).catch((e: unknown) => e);
      expect(wrongId).toMatchObject({ kind: 'tls' });
      expect((wrongId as Error).message).toMatch(/is not spiffe:\/\/cluster.local\/ns\/shop\/sa\/other/);
      const errors = server === 'node' ? jsServer.handshakeErrors : native.handshakeErrors;
      const before = errors.length;
      const stranger = await pool.connect(request(servers[server](), strangerCreds)).catch((e: unknown) => e);
      expect(stranger).toMatchObject({ kind: 'tls' });
      await until(() => errors.length > before, 5000, 'server handshake error');
    });
  });
});

describe.each(['node', 'native'] as const)('%s client, app socket gone before the 200', (client) => {
  // Issue #13 item 4: the stream must not be left neither attached nor cancelled, holding the pool's
  // stream count, the server's upstream connection and the connection window.
  it('cancels the stream and releases the upstream', async () => {
    const pool = clients[client]();
    pools.push(pool);
    const upstreams: Socket[] = [];
    const { server: up, port } = await tcpServer((s) => {
      upstreams.push(s);
      s.on('error', () => {});
      s.write('hello from upstream'); // data waiting in the window for a tunnel that never starts
    });
    let answer!: () => void;
    const answered = new Promise<void>((r) => (answer = r));
    const decide = native.decide;
    native.decide = async (req) => {
      const upstream = await connectTo(req.authority.port);
      await answered; // the app gives up while the CONNECT is pending
      return { status: 200, upstream };
    };
    try {
      const { app, agent } = await front.connection();
      const pending = pool.connect({ ...request(native.port), authority: `127.0.0.1:${port}` });
      await until(() => upstreams.length === 1, 5000, 'upstream connection');
      app.destroy();
      agent.destroy();
      answer();
      const t = await pending;
      // As outbound.ts does with the app's socket; bounded, as it once never returned.
      const r = await Promise.race([
        t.relay(agent),
        new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('relay() never returned')), 5000).unref()),
      ]);
      expect(r.error).toMatch(/closed before the tunnel started/);
      await until(() => pool.stats().streams === 0, 5000, 'the pool to release the stream');
      await until(() => upstreams[0]!.destroyed || upstreams[0]!.readableEnded, 5000, 'the server to close the upstream');
      if (client === 'native') await until(() => relayAddon().stats().streams === 0, 5000, 'native streams to close');
    } finally {
      native.decide = decide;
      up.close();
    }
  });
});

describe('native relay', () => {
  it('resets the app connection when the upstream resets, and leaves nothing open', async () => {
    const pool = clients.native();
    pools.push(pool);
    const { server: rst, port } = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
    try {
      const t = await pool.connect({ ...request(native.port), authority: `127.0.0.1:${port}` });
      const { app, agent } = await front.connection();
      const relayed = t.relay(agent);
      const closed = new Promise<string>((r) => {
        app.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
        app.once('close', () => r('close'));
      });
      app.write('x');
      expect(await closed).toBe('ECONNRESET');
      expect((await relayed).error).toMatch(/stream reset|tcp/);
    } finally {
      rst.close();
    }
    pool.close();
    await until(() => relayAddon().stats().streams === 0, 5000, 'native streams to close');
  });

  it('relays plaintext both ways with half-close, and passes a reset on', async () => {
    const { app, agent } = await front.connection();
    const relayed = nativeRelay(agent, await connectTo(echoPort));
    const data = randomBytes(3 * 1024 * 1024);
    const back = await exchange(app, data);
    expect(sha(back)).toBe(sha(data));
    expect(await relayed).toEqual({ sent: data.length, received: data.length, error: undefined });

    const { server: rst, port } = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
    try {
      const c = await front.connection();
      const r = nativeRelay(c.agent, await connectTo(port));
      const closed = new Promise<string>((res) => c.app.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? e.message)));
      c.app.write('x');
      expect(await closed).toBe('ECONNRESET');
      expect((await r).error).toBe('tcp: ECONNRESET');
    } finally {
      rst.close();
    }
  });

  it('drains: stops accepting, and ends the tunnels still open at the deadline', async () => {
    // An echo that expects to be reset: the drain ends its tunnel with RST_STREAM, and the relay resets it.
    const app2 = await tcpServer((c) => {
      c.on('error', () => {});
      c.pipe(c);
    });
    const srv = new NativeHboneServer({
      credentials: () => serverCreds,
      trustDomain: 'cluster.local',
      onConnect: async () => ({ status: 200, upstream: await connectTo(app2.port) }),
    });
    await srv.listen({ port: 0, host: '127.0.0.1' });
    const port = srv.address().port;
    const pool = clients.native();
    pools.push(pool);
    const t = await pool.connect(request(port));
    const { app, agent } = await front.connection();
    const relayed = t.relay(agent);
    app.on('error', () => {});
    const closed = new Promise((r) => app.once('close', r));
    app.write('a tunnel that stays open');
    await srv.drain(300);
    await closed;
    expect(srv.stats().sessions).toBe(0);
    expect((await relayed).error).toBeTruthy();
    await expect(connectTo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    app2.server.close();
  });
});
