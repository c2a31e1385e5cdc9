// The `acceptStream` decision on both transports: the tunnel handed to the caller as a Duplex to
// parse (what the waypoint does), with real TLS and real pools of either kind as the client. A reply
// comes back; a reset or close mid-transfer on either side ends the other, and the server's stream
// and session counters return to zero.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nativeSessionOpener } from '../../../src/hbone/native/client.ts';
import { HbonePool, type HboneConnectRequest, type HboneTunnel } from '../../../src/hbone/pool.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';
import { connectTo, exchange, frontDoor, spiffe, until } from '../harness.ts';
import { createCa } from '../pki.ts';
import { TRANSPORTS, startServer, type EitherServer } from './either.ts';

let serverCreds: Credentials;
let clientCreds: Credentials;
let front: Awaited<ReturnType<typeof frontDoor>>;

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  front = await frontDoor();
});
afterAll(() => front.close());

const pools = {
  node: () => new HbonePool<HboneTunnel>(),
  native: () => new HbonePool<HboneTunnel>({ open: nativeSessionOpener() }),
};

function request(port: number): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: spiffe('shop', 'web'), dstIdentity: spiffe('shop', 'cart'), dstAddress: '127.0.0.1' },
    port,
    authority: '10.1.2.3:8080', // never dialled: the server keeps the stream
    headers: {},
    credentials: clientCreds,
    dial: () => connectTo(port),
  };
}

/** Resolves when `d` has closed. */
const closed = (d: Duplex) => new Promise<void>((r) => (d.destroyed && d.closed ? r() : d.once('close', () => r())));

describe.each(TRANSPORTS)('acceptStream on the %s server', (serverKind) => {
  let s: EitherServer;
  beforeAll(async () => {
    s = await startServer(serverKind, serverCreds);
  });
  afterAll(async () => {
    await s.server.drain(100);
  });

  describe.each(TRANSPORTS)('from a %s client', (clientKind) => {
    let pool: HbonePool<HboneTunnel>;
    beforeAll(() => {
      pool = pools[clientKind]();
    });
    afterEach(async () => {
      await until(() => s.server.stats().streams === 0, 5000, 'no stream left on the server');
    });
    afterAll(async () => {
      pool.close(true);
      await until(() => s.server.stats().sessions === 0, 5000, 'no session left on the server');
    });

    /** Opens a tunnel and relays it for a fresh app connection; resolves with the app's socket. */
    async function open(): Promise<{ app: Socket; relayed: Promise<unknown> }> {
      const t = await pool.connect(request(s.port));
      const { app, agent } = await front.connection();
      return { app, relayed: t.relay(agent) };
    }

    it('hands the tunnel over as a Duplex: the handler reads the request and writes a reply', async () => {
      const before = s.outcomes.length;
      s.decide = async () => ({
        status: 200,
        acceptStream: (d) => {
          const chunks: Buffer[] = [];
          d.on('data', (c: Buffer) => chunks.push(c));
          d.once('end', () => d.end(`HTTP/1.1 200 OK\r\n\r\n${Buffer.concat(chunks).toString().split(' ')[1]}`));
        },
      });
      const { app, relayed } = await open();
      const req = 'GET /cart HTTP/1.1\r\nhost: cart\r\n\r\n';
      const reply = 'HTTP/1.1 200 OK\r\n\r\n/cart';
      expect((await exchange(app, req)).toString()).toBe(reply);
      expect(await relayed).toMatchObject({ sent: req.length, received: reply.length, error: undefined });
      await until(() => s.outcomes.length > before, 5000, 'outcome');
      expect(s.outcomes.at(-1)).toMatchObject({
        status: 200, sent: req.length, received: reply.length, authority: { address: '10.1.2.3', port: 8080 }, error: undefined,
      });
    });

    it('ends the Duplex when the client resets mid-transfer', async () => {
      const before = s.outcomes.length;
      let got = 0;
      let duplex: Duplex | undefined;
      s.decide = async () => ({
        status: 200,
        acceptStream: (d) => {
          duplex = d;
          d.on('error', () => {});
          d.on('data', (c: Buffer) => (got += c.length));
          d.once('end', () => d.end()); // a parser that meets the end of its input ends its side
        },
      });
      const { app, relayed } = await open();
      app.on('error', () => {});
      app.write(Buffer.alloc(64 * 1024, 1));
      await until(() => got > 0, 5000, 'bytes at the handler');
      app.resetAndDestroy();
      await closed(duplex!);
      await relayed;
      await until(() => s.outcomes.length > before, 5000, 'outcome');
      expect(s.outcomes.at(-1)!.status).toBe(200);
    });

    it('ends the client when the handler destroys the Duplex mid-transfer', async () => {
      const before = s.outcomes.length;
      let duplex: Duplex | undefined;
      s.decide = async () => ({
        status: 200,
        acceptStream: (d) => {
          duplex = d;
          d.on('error', () => {});
          d.once('data', () => d.destroy());
        },
      });
      const { app, relayed } = await open();
      app.on('error', () => {});
      app.once('end', () => app.end()); // an app that meets the end of the reply ends its side
      app.write(Buffer.alloc(64 * 1024, 1));
      await new Promise<void>((r) => app.once('close', () => r()));
      await closed(duplex!);
      await relayed;
      await until(() => s.outcomes.length > before, 5000, 'outcome');
      expect(s.outcomes.at(-1)!.status).toBe(200);
    });
  });
});
