// A `dial` decision (the server connects the socket it is handed) on both transports, past what the
// front's table covers: a tunnel of a few MiB both ways, and the sockets of connects given up
// midway, by a stream reset or by the whole connection closing, are closed (counted in
// /proc/self/fd) with the outcome the agent's own dial gave then.
import { createHash, randomBytes } from 'node:crypto';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool } from '../../../src/hbone/pool.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';
import { dialSockets, echo, exchange, frontDoor, openFds, startBlackhole, synSent, tcpServer, until, webToCart } from '../harness.ts';
import { createCa } from '../pki.ts';
import { TRANSPORTS, rawSession, startServer, type EitherServer } from './either.ts';

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let sockets: ReturnType<typeof dialSockets>;
let front: Awaited<ReturnType<typeof frontDoor>>;

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  blackhole = await startBlackhole();
  sockets = dialSockets();
  front = await frontDoor();
});
afterAll(() => {
  upstream.close();
  blackhole.close();
  sockets.close();
  front.close();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const N = 6;

describe.each(TRANSPORTS)('a dial decision on the %s transport', (kind) => {
  let s: EitherServer;
  const pool = new HbonePool();
  beforeAll(async () => {
    s = await startServer(kind, serverCreds);
  });
  afterAll(async () => {
    pool.close(true);
    await s.server.drain(100);
  });

  it('connects and relays 3 MiB both ways with half-close', async () => {
    s.decide = async (req) => ({ status: 200, dial: { fd: sockets.take(4), address: req.authority.address, port: req.authority.port } });
    const before = s.outcomes.length;
    const t = await pool.connect(webToCart(s.port, echoPort, clientCreds));
    const { app, agent } = await front.connection();
    const relayed = t.relay(agent);
    const data = randomBytes(3 * 1024 * 1024);
    const back = await exchange(app, data);
    expect(sha(back)).toBe(sha(data));
    expect(await relayed).toMatchObject({ sent: data.length, received: data.length });
    await until(() => s.outcomes.length > before, 5000, 'the outcome');
    expect(s.outcomes.at(-1)).toMatchObject({ status: 200, sent: data.length, received: data.length });
    expect(s.outcomes.at(-1)!.reason).toBeUndefined();
    expect(s.outcomes.at(-1)!.error).toBeUndefined();
  });

  it('dials an IPv6 target with an IPv6 socket', async () => {
    const v6 = createServer({ allowHalfOpen: true }, echo);
    await new Promise<void>((r) => v6.listen(0, '::1', r));
    try {
      const v6Port = (v6.address() as AddressInfo).port;
      s.decide = async (req) => ({ status: 200, dial: { fd: sockets.take(6), address: req.authority.address, port: req.authority.port } });
      const before = s.outcomes.length;
      const t = await pool.connect({ ...webToCart(s.port, v6Port, clientCreds), authority: `[::1]:${v6Port}` });
      const { app, agent } = await front.connection();
      const relayed = t.relay(agent);
      expect((await exchange(app, 'over IPv6')).toString()).toBe('over IPv6');
      await relayed;
      await until(() => s.outcomes.length > before, 5000, 'the outcome');
      expect(s.outcomes.at(-1)).toMatchObject({ status: 200, authority: { address: '::1', port: v6Port }, sent: 9, received: 9 });
    } finally {
      v6.close();
    }
  });

  /**
   * N CONNECTs to the blackhole, their sockets taken before counting so the count moves only by
   * what the server closes; once all are connecting, `giveUp` ends them.
   */
  async function abandon(giveUp: (session: ClientHttp2Session, streams: ClientHttp2Stream[]) => void): Promise<void> {
    const fds = Array.from({ length: N }, () => sockets.take(4));
    s.decide = async (req) => ({ status: 200, dial: { fd: fds.shift()!, address: req.authority.address, port: req.authority.port } });
    const session = await rawSession(s.port, clientCreds);
    const baseline = openFds();
    const before = s.outcomes.length;
    try {
      const streams = Array.from({ length: N }, () => {
        const st = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${blackhole.port}` }, { endStream: false });
        st.on('error', () => {});
        return st;
      });
      await until(() => synSent(blackhole.port) === N, 5000, 'every dial to be connecting');
      giveUp(session, streams);
      await until(() => synSent(blackhole.port) === 0, 5000, 'the connects to be given up');
      await until(() => s.outcomes.length - before === N, 5000, 'the outcomes');
    } finally {
      session.destroy();
    }
    // The N sockets handed over are closed, nothing else leaks (the session's own fd is gone too).
    await until(() => openFds() <= baseline - N, 5000, `the fds to drop from ${baseline} by ${N}: ${openFds()}`);
    // As the agent's dial reported a connect its signal aborted: no response, reason ECONNABORTED.
    for (const o of s.outcomes.slice(before)) {
      expect(o).toMatchObject({ status: 0, sent: 0, received: 0, reason: `connect 127.0.0.1:${blackhole.port}: ECONNABORTED` });
    }
    await until(() => s.server.stats().streams === 0, 5000, 'no stream left');
  }

  it('closes the socket of a connect whose stream the peer resets', async () => {
    await abandon((_session, streams) => streams.forEach((st) => st.close(http2.constants.NGHTTP2_CANCEL)));
  });

  it('closes the sockets of connects whose connection closes', async () => {
    await abandon((session) => session.destroy());
  });
});
