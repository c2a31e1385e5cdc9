import { constants } from 'node:http2';
import type { Server, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HboneError } from '../../src/hbone/errors.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { HbonePool, type HboneConnectRequest, type HbonePoolOptions, type HboneTunnel, type PoolKey } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { connectTo, echo, exchange, frontDoor, spiffe, startHbone, tcpServer, until, type TestServer } from './harness.ts';
import { createCa } from './pki.ts';

const SERVER_ID = spiffe('shop', 'cart');
const CLIENT_ID = spiffe('shop', 'web');

let clientCreds: Credentials;
let hb: TestServer;
let upstream: Server;
let echoPort: number;
let front: Awaited<ReturnType<typeof frontDoor>>;
const pools: HbonePool<HboneTunnel>[] = [];

beforeAll(async () => {
  const ca = await createCa();
  const serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  hb = await startHbone(() => serverCreds);
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  front = await frontDoor();
});

afterAll(async () => {
  for (const p of pools) p.close(true);
  await hb.hbone.drain(100);
  upstream.close();
  front.close();
});

/** A request whose dials are counted in `dials`. */
function counted(key: Partial<PoolKey> = {}) {
  const dials: Socket[] = [];
  const req: HboneConnectRequest = {
    key: { scope: 'pod-web', srcIdentity: CLIENT_ID, dstIdentity: SERVER_ID, dstAddress: '127.0.0.1', ...key },
    port: hb.port,
    authority: `127.0.0.1:${echoPort}`,
    headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
    credentials: clientCreds,
    dial: async () => {
      const s = await connectTo(hb.port);
      dials.push(s);
      return s;
    },
  };
  return { req, dials };
}

/** An app connection through the tunnel to the echo and back. */
async function roundTrip(t: HboneTunnel, text: string): Promise<void> {
  const { app, agent } = await front.connection();
  const relayed = t.relay(agent);
  expect((await exchange(app, text)).toString()).toBe(text);
  expect(await relayed).toMatchObject({ sent: text.length, received: text.length });
}

// Every rule of the pool holds for both session kinds: Node's HTTP/2 and the native relay.
describe.each(['node', 'native'] as const)('HBONE pool (%s sessions)', (kind) => {
  /** Closes earlier tests' pools and waits until the server holds no session: counts are then exact. */
  async function quiet(): Promise<void> {
    for (const p of pools.splice(0)) p.close(true);
    await until(() => hb.hbone.stats().sessions === 0, 5000, "the earlier tests' sessions to end");
  }

  function newPool(opts: HbonePoolOptions = {}): HbonePool<HboneTunnel> {
    const p = new HbonePool<HboneTunnel>({ ...opts, open: kind === 'native' ? nativeSessionOpener() : undefined });
    pools.push(p);
    return p;
  }

  it('reuses one session for sequential connects of a key', async () => {
    await quiet();
    const pool = newPool();
    const { req, dials } = counted();
    const sessionsBefore = 0;
    for (let i = 0; i < 20; i++) await roundTrip(await pool.connect(req), `hello ${i}`);
    expect(dials.length).toBe(1);
    await until(() => pool.stats().streams === 0, 5000, 'the last stream to close');
    expect(pool.stats().sessions).toBe(1);
    expect(hb.hbone.stats().sessions).toBe(sessionsBefore + 1);
  });

  it('shares one pending dial among concurrent connects', async () => {
    const pool = newPool();
    const { req, dials } = counted();
    const tunnels = await Promise.all(Array.from({ length: 10 }, () => pool.connect(req)));
    expect(dials.length).toBe(1);
    expect(pool.stats().keys[0]!.streams).toEqual([10]);
    await Promise.all(tunnels.map((t, i) => roundTrip(t, `c${i}`)));
  });

  it('opens a second session beyond 100 concurrent streams', async () => {
    const pool = newPool();
    const { req, dials } = counted();
    const tunnels = await Promise.all(Array.from({ length: 150 }, () => pool.connect(req)));
    expect(dials.length).toBe(2);
    expect(pool.stats()).toMatchObject({ sessions: 2, streams: 150 });
    expect(pool.stats().keys[0]!.streams).toEqual([100, 50]);
    await Promise.all(tunnels.map((t, i) => roundTrip(t, `s${i}`)));
    await until(() => pool.stats().streams === 0, 5000, 'streams to close');
  });

  it('keeps keys apart: scope, source identity and destination address each get their own session', async () => {
    const pool = newPool();
    const a = counted();
    const b = counted({ scope: 'pod-other' });
    const c = counted({ srcIdentity: spiffe('shop', 'batch') });
    const d = counted({ dstAddress: '127.0.0.2' }); // dialled to 127.0.0.1 all the same: only the key differs
    for (const { req } of [a, b, c, d, a, b, c, d]) await roundTrip(await pool.connect(req), 'x');
    expect([a, b, c, d].map((x) => x.dials.length)).toEqual([1, 1, 1, 1]);
    expect(pool.stats().sessions).toBe(4);
  });

  it('closes sessions that stay idle past the timeout', async () => {
    await quiet();
    const pool = newPool({ idleTimeoutMs: 150 });
    const { req, dials } = counted();
    const serverSessions = 0;
    await roundTrip(await pool.connect(req), 'idle soon');
    expect(pool.stats().sessions).toBe(1);
    await until(() => pool.stats().sessions === 0, 5000, 'idle session to be released');
    await until(() => hb.hbone.stats().sessions === serverSessions, 5000, 'the idle connection to close');
    await roundTrip(await pool.connect(req), 'again');
    expect(dials.length).toBe(2);
  });

  it('reports dial failures and times out a CONNECT the server never answers', async () => {
    const pool = newPool({ connectTimeoutMs: 300 });
    const { req } = counted();
    const refused = await pool.connect({ ...req, dial: () => Promise.reject(Object.assign(new Error('boom'), { code: 'ECONNREFUSED' })) }).catch((e: unknown) => e);
    expect(refused).toMatchObject({ kind: 'dial', message: expect.stringContaining('ECONNREFUSED') });

    const decide = hb.decide;
    let late!: Socket;
    hb.decide = async (r) => {
      await new Promise((res) => setTimeout(res, 600));
      late = await connectTo(r.authority.port);
      return { status: 200, upstream: late };
    };
    const outcomes = hb.outcomes.length;
    const e = await pool.connect(req).catch((err: unknown) => err);
    hb.decide = decide;
    expect(e).toBeInstanceOf(HboneError);
    expect(e).toMatchObject({ kind: 'timeout' });
    await until(() => hb.outcomes.length > outcomes, 5000, 'server outcome');
    expect(hb.outcomes.at(-1)).toMatchObject({ status: 0 });
    expect(late.destroyed).toBe(true);
  });
});

// RFC 9113 6.8: streams above a GOAWAY's last stream id were never processed, whatever its code, and
// may be retried elsewhere (Envoy retries them as refused streams); a peer ending a session with
// GOAWAY(INTERNAL_ERROR) must not fail the CONNECTs it never looked at.
it.each(['node', 'native'] as const)('retries on a new session a CONNECT that a GOAWAY (with an error) left unprocessed (%s sessions)', async (kind) => {
  const pool = new HbonePool<HboneTunnel>({ open: kind === 'native' ? nativeSessionOpener() : undefined });
  pools.push(pool);
  const { req, dials } = counted();
  await roundTrip(await pool.connect(req), 'stream 1');
  const decide = hb.decide;
  let first = true;
  hb.decide = async (r) => {
    if (!first) return decide(r);
    first = false;
    const session = r.stream.session!;
    session.goaway(constants.NGHTTP2_INTERNAL_ERROR, 1); // processed stream 1 only: not this one (3)
    await new Promise((res) => session.once('close', res));
    return { status: 503, reason: 'session gone' };
  };
  try {
    await roundTrip(await pool.connect(req), 'after a GOAWAY');
  } finally {
    hb.decide = decide;
  }
  expect(dials.length).toBe(2);
});
