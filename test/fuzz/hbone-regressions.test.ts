// Named regressions for what the HBONE fuzzer (hbone.test.ts) found, each a fixed frame sequence.
import type { Server } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { createHboneServer, type PodHboneServer } from '../../src/hbone/node/server.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { tcpServer, until } from '../hbone/harness.ts';
import { createCa } from '../hbone/pki.ts';
import { connectBlock, encodeInput, F, T, type Frame } from './h2frames.ts';

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;

beforeAll(async () => {
  const ca = await createCa('weft fuzz root');
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  }));
});
afterAll(() => upstream?.close());

async function start(kind: 'node' | 'native', opts: { pingIntervalMs?: number; pingTimeoutMs?: number } = {}): Promise<{ server: PodHboneServer; port: number }> {
  const o = { credentials: () => serverCreds, trustDomain: 'cluster.local', onConnect: async () => ({ status: 503 as const, reason: 'no' }), ...opts };
  if (kind === 'node') {
    const s = createHboneServer(o);
    await s.listen({ port: 0, host: '127.0.0.1' });
    return { server: s, port: s.address().port };
  }
  const s = new NativeHboneServer(o);
  await s.listen({ port: 0, host: '127.0.0.1' });
  return { server: s, port: s.address().port };
}

/** Writes the frames in one TLS record after the preface and SETTINGS (and closes at once with `end`), waits, and leaves. */
async function send(port: number, frames: Frame[], waitMs = 200, end = false): Promise<void> {
  const s = tls.connect({ port, host: '127.0.0.1', key: clientCreds.key, cert: clientCreds.certChain, ca: clientCreds.root, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  s.on('error', () => {});
  await new Promise((r) => s.once('secureConnect', r));
  const bytes = encodeInput({ preface: 'ok', pieces: 1, frames: [{ type: T.SETTINGS, flags: 0, stream: 0, payload: Buffer.alloc(0) }, ...frames] });
  if (end) s.end(bytes);
  else s.write(bytes);
  await new Promise((r) => setTimeout(r, waitMs));
  s.destroy();
}

const badPing: Frame = { type: T.PING, flags: 0, stream: 0, payload: Buffer.alloc(3) }; // FRAME_SIZE_ERROR

describe.each(['node', 'native'] as const)('%s HBONE server regressions', (kind) => {
  // Node emits 'stream' a tick after nghttp2 parsed the HEADERS; a connection error later in the
  // same read destroys the streams first, so Node's server found no session for the stream
  // (stream.session undefined): a TypeError in onStream, an unhandled rejection that ends the agent.
  // Found by the HBONE fuzzer (test/fuzz/corpus/hbone-node/new-2a12ca0ea509.json), minimized here:
  // three CONNECTs, DATA, and a PUSH_PROMISE (which a client must not send) in one read.
  it('CONNECTs followed by a connection error in the same read do not throw', async () => {
    const errors: unknown[] = [];
    const onRejection = (e: unknown) => errors.push(e);
    process.on('unhandledRejection', onRejection);
    process.on('uncaughtException', onRejection);
    const { server, port } = await start(kind);
    try {
      const block = connectBlock(`127.0.0.1:${echoPort}`);
      const headers = (stream: number): Frame => ({ type: T.HEADERS, flags: F.END_HEADERS, stream, payload: block });
      const pushPromise: Frame = { type: T.PUSH_PROMISE, flags: F.END_HEADERS, stream: 5, payload: Buffer.concat([Buffer.from([0, 0, 0, 2]), block]) };
      for (let i = 0; i < 3; i++) {
        await send(port, [headers(3), headers(5), { type: T.DATA, flags: 0, stream: 5, payload: Buffer.from('wf') }, headers(7), pushPromise], 100);
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(errors.map(String)).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onRejection);
      await server.drain(100);
    }
  });

  it('a CONNECT followed by a stream or connection error in the same read does not throw', async () => {
    const errors: unknown[] = [];
    const onRejection = (e: unknown) => errors.push(e);
    process.on('unhandledRejection', onRejection);
    const { server, port } = await start(kind);
    try {
      const connect: Frame = { type: T.HEADERS, flags: F.END_HEADERS, stream: 1, payload: connectBlock(`127.0.0.1:${echoPort}`) };
      const ping: Frame = { type: T.PING, flags: 0, stream: 0, payload: Buffer.alloc(8) };
      await send(port, [connect, badPing], 50);
      // The peer closes (close_notify, FIN) right behind its CONNECT: the same read ends the session.
      for (let i = 0; i < 5; i++) await send(port, [connect], 50, true);
      await send(port, [connect, { type: T.RST_STREAM, flags: 0, stream: 1, payload: Buffer.from([0, 0, 0, 8]) }], 50);
      // Stream errors: the server resets stream 1 while answering this very read.
      await send(port, [connect, { type: T.WINDOW_UPDATE, flags: 0, stream: 1, payload: Buffer.alloc(4) }], 50);
      await send(port, [{ ...connect, flags: F.END_HEADERS | F.END_STREAM }, { type: T.DATA, flags: 0, stream: 1, payload: Buffer.from('late') }], 50);
      await send(port, [connect, ...Array<Frame>(1100).fill(ping)], 50);
      await new Promise((r) => setTimeout(r, 200));
      expect(errors.map(String)).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
      await server.drain(100);
    }
  });

  // Found by the fuzzer's leak check: after Node's server answers a protocol error with GOAWAY it
  // stops reading the socket, so it never sees the peer close it; session, TLS socket and fd stay
  // until the keepalive gives up (ping interval + timeout, 30 s by default). A peer can hold
  // server sockets that way far faster than they are released. The native relay closes at once;
  // Node's server now destroys a session whose frames stay queued in nghttp2 (stalled.ts).
  it('releases the session soon after a peer that caused a protocol error has left', async () => {
    const { server, port } = await start(kind);
    try {
      await send(port, [badPing], 200);
      await until(() => server.stats().sessions === 0, 5000, 'the session to be released');
    } finally {
      await server.drain(100);
    }
  });
});
