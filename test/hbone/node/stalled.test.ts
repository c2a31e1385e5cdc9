// destroyWhenStalled on Node's HBONE server: a live peer that merely stops reading keeps its
// session, and so does a busy one whose frames are queued whenever it is looked at.
import http2, { type ServerHttp2Session } from 'node:http2';
import type { AddressInfo, Server } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createHboneServer } from '../../../src/hbone/node/server.ts';
import { STALL_CHECK_MS, destroyWhenStalled } from '../../../src/hbone/node/stalled.ts';
import { ALPN, secureContextOptions, type Credentials } from '../../../src/hbone/settings.ts';
import { connectBlock, encodeInput, F, T, type Frame } from '../../fuzz/h2frames.ts';
import { connectTo, startHbone, tcpServer, until, type TestServer } from '../harness.ts';
import { createCa } from '../pki.ts';

let clientCreds: Credentials;
let serverCreds: Credentials;
let hb: TestServer;
let upstream: Server;
let sourcePort: number;

beforeAll(async () => {
  const ca = await createCa('weft stall root');
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  hb = await startHbone(() => serverCreds);
  // An upstream that sends far more than socket buffers hold, as a download does.
  ({ server: upstream, port: sourcePort } = await tcpServer((s) => {
    s.on('error', () => {});
    const chunk = Buffer.alloc(1 << 20, 0x61);
    for (let i = 0; i < 64; i++) s.write(chunk);
  }));
});
afterAll(async () => {
  upstream?.close();
  await hb?.hbone.drain(100);
});

/** A peer that opens a download, reads a little, and stops reading; the caller closes it. */
async function stopReading(port: number): Promise<tls.TLSSocket> {
  const s = tls.connect({ port, host: '127.0.0.1', key: clientCreds.key, cert: clientCreds.certChain, ca: clientCreds.root, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  s.on('error', () => {});
  await new Promise((r) => s.once('secureConnect', r));
  // Windows as large as HTTP/2 allows, so the server's writes back pile up on the socket.
  const big = Buffer.alloc(6);
  big.writeUInt16BE(4, 0); // SETTINGS_INITIAL_WINDOW_SIZE
  big.writeUInt32BE(0x7fffffff, 2);
  const inc = Buffer.alloc(4);
  inc.writeUInt32BE(0x7fffffff - 65535, 0);
  const frames: Frame[] = [
    { type: T.SETTINGS, flags: 0, stream: 0, payload: big },
    { type: T.WINDOW_UPDATE, flags: 0, stream: 0, payload: inc },
    { type: T.HEADERS, flags: F.END_HEADERS, stream: 1, payload: connectBlock(`127.0.0.1:${sourcePort}`) },
  ];
  s.write(encodeInput({ preface: 'ok', pieces: 1, frames }));
  // No 'data' listener: this peer reads a little and then stops, while its download is pending.
  return s;
}

it('keeps the session of a peer that stops reading while its download is pending', async () => {
  const s = await stopReading(hb.port);
  try {
    await until(() => hb.hbone.stats().streams === 1, 5000, 'the CONNECT to open');
    await new Promise((r) => setTimeout(r, 4 * STALL_CHECK_MS));
    expect(hb.hbone.stats()).toEqual({ sessions: 1, streams: 1 });
  } finally {
    s.destroy();
  }
});

it('releases the session of a peer that stopped reading and left once the keepalive gives up', async () => {
  const server = createHboneServer({
    credentials: () => serverCreds,
    trustDomain: 'cluster.local',
    pingIntervalMs: 200,
    pingTimeoutMs: 500,
    onConnect: async () => ({ status: 200 as const, upstream: await connectTo(sourcePort) }),
  });
  await server.listen({ port: 0, host: '127.0.0.1' });
  try {
    const s = await stopReading(server.address().port);
    await until(() => server.stats().streams === 1, 5000, 'the CONNECT to open');
    await new Promise((r) => setTimeout(r, 200)); // the server's writes back up
    s.destroy();
    // The keepalive destroys the session; its socket must close although a write never completes.
    await until(() => server.stats().sessions === 0, 5000 + 3 * STALL_CHECK_MS, 'the session to be released');
  } finally {
    await server.drain(100);
  }
});

it('keeps a busy session that has frames queued whenever it is checked', async () => {
  const checkMs = 50;
  const h2 = http2.createServer();
  const sessions: ServerHttp2Session[] = [];
  const server = tls.createServer({ ...secureContextOptions(serverCreds), ALPNProtocols: ALPN }, (sock: TLSSocket) => h2.emit('connection', sock));
  h2.on('session', (session: ServerHttp2Session) => {
    sessions.push(session);
    session.on('error', () => {});
    // Queues a frame each check interval just before the check runs (same due time, created first):
    // a session busy enough that frames wait for the end of the event-loop turn at every look.
    const busy = setInterval(() => {
      if (!session.destroyed) session.ping(() => {});
    }, checkMs);
    session.once('close', () => clearInterval(busy));
    destroyWhenStalled(session, session.socket as TLSSocket, checkMs);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = http2.connect(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, {
    ...secureContextOptions(clientCreds),
    ALPNProtocols: ALPN,
    checkServerIdentity: () => undefined,
  });
  client.on('error', () => {});
  try {
    await until(() => sessions.length === 1, 5000, 'the session');
    await new Promise((r) => setTimeout(r, 20 * checkMs));
    expect(sessions[0]!.destroyed).toBe(false);
    expect(client.destroyed).toBe(false);
  } finally {
    client.destroy();
    sessions.forEach((x) => x.destroy());
    server.close();
  }
});
