// buffersOnly() on a real Node HTTP/2 stream over TLS: writes as node:http makes them (a string
// head, Buffers, and the empty write that ends a message, corked into one vectored write) arrive
// byte for byte even when their memory is reused the moment their callbacks say they are written.
import http2, { type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ALPN, secureContextOptions, type Credentials } from '../../src/hbone/settings.ts';
import { buffersOnly } from '../../src/waypoint/buffers-only.ts';
import { createCa } from '../hbone/pki.ts';

let server: http2.Http2SecureServer;
let clientCreds: Credentials;
let port: number;
const streams: ServerHttp2Stream[] = [];

beforeAll(async () => {
  const ca = await createCa('weft buffers root');
  const serverCreds = await ca.issue('conf', 'web');
  clientCreds = await ca.issue('conf', 'client');
  server = http2.createSecureServer({ ...secureContextOptions(serverCreds), ALPNProtocols: ALPN });
  server.on('stream', (s) => {
    s.on('error', () => {});
    s.respond({ ':status': 200 });
    streams.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => server.close());

/** Rounds of [head string, body Buffer, ''] corked together; each Buffer is overwritten once its write is reported done. */
async function relay(wrap: (d: Duplex) => Duplex): Promise<{ got: string; want: string }> {
  const client = http2.connect(`https://127.0.0.1:${port}`, { ...secureContextOptions(clientCreds), ALPNProtocols: ALPN, checkServerIdentity: () => undefined });
  client.on('error', () => {});
  const req = client.request({ ':path': '/' });
  const got: Buffer[] = [];
  req.on('data', (c: Buffer) => got.push(c));
  const ended = new Promise((r) => req.once('end', r));
  while (!streams.length) await new Promise((r) => setTimeout(r, 5));
  const out = wrap(streams.shift()!);
  let want = '';
  for (let round = 0; round < 40; round++) {
    const head = `HTTP/1.1 200 OK\r\nx-round: ${round}\r\n\r\n`;
    const body = Buffer.alloc(37 + round * 97, String.fromCharCode(97 + (round % 26)));
    want += head + body.toString('latin1');
    out.cork();
    out.write(head, 'latin1');
    out.write(body);
    out.write('', 'latin1', () => body.fill('X')); // as reused (or freed) memory would be
    out.uncork();
    await new Promise((r) => setImmediate(r));
  }
  out.end();
  await ended;
  client.close();
  return { got: Buffer.concat(got).toString('latin1'), want };
}

it('delivers corked writes ending in an empty one byte for byte', async () => {
  const { got, want } = await relay((d) => buffersOnly(d));
  expect(got.length).toBe(want.length);
  expect(got.includes('X')).toBe(false);
  expect(got).toBe(want);
});

it('(the stream alone completes such a write before its bytes are sent)', async () => {
  // Documents what buffersOnly() guards against on this Node: if this starts passing, the
  // workaround may no longer be needed.
  const { got } = await relay((d) => d);
  expect(got.includes('X')).toBe(true);
});
