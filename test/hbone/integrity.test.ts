// Every byte relayed through HBONE arrives as sent, under concurrency: many tunnels on one session
// relaying distinct bodies both ways through the pooled read buffers (forward.ts) at once.
import { createHash } from 'node:crypto';
import type { Server, Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { HbonePool } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { frontDoor, startHbone, tcpServer, webToCart, type TestServer } from './harness.ts';
import { createCa } from './pki.ts';

let clientCreds: Credentials;
let hb: TestServer;
let upstream: Server;
let echoPort: number;
let front: Awaited<ReturnType<typeof frontDoor>>;
const pool = new HbonePool();

/** Echoes each connection's bytes back with every byte incremented, so an echo is no copy of the request. */
const transform = (s: Socket) => {
  s.on('data', (d: Buffer) => {
    const out = Buffer.allocUnsafe(d.length);
    for (let i = 0; i < d.length; i++) out[i] = (d[i]! + 1) & 0xff;
    s.write(out);
  });
  s.on('end', () => s.end());
  s.on('error', () => {});
};

beforeAll(async () => {
  const ca = await createCa();
  const serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  hb = await startHbone(() => serverCreds);
  ({ server: upstream, port: echoPort } = await tcpServer(transform));
  front = await frontDoor();
});

afterAll(async () => {
  pool.close(true);
  await hb.hbone.drain(100);
  upstream.close();
  front.close();
});

/** Bytes no other body shares: each 8-byte word names the body and its offset. */
function body(id: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0; off + 8 <= size; off += 8) {
    b.writeUInt32BE(id, off);
    b.writeUInt32BE(off, off + 4);
  }
  return b;
}

async function roundTrip(id: number, size: number): Promise<string | undefined> {
  const t = await pool.connect(webToCart(hb.port, echoPort, clientCreds));
  const { app, agent } = await front.connection();
  const relayed = t.relay(agent);
  const sent = body(id, size);
  const got = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    app.on('data', (c: Buffer) => chunks.push(c));
    app.once('end', () => resolve(Buffer.concat(chunks)));
    app.once('error', reject);
    // In pieces, as an app writes: several reads on the far side.
    let off = 0;
    const step = () => {
      while (off < size) {
        const n = Math.min(size - off, 1 + ((id * 7919 + off) % 9000));
        const more = app.write(sent.subarray(off, off + n));
        off += n;
        if (!more) return void app.once('drain', step);
      }
      app.end();
    };
    step();
  });
  await relayed;
  const want = Buffer.from(sent.map((x) => (x + 1) & 0xff));
  if (got.equals(want)) return undefined;
  let at = 0;
  while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
  return `body ${id} (${size} bytes, got ${got.length}): differs at ${at}: ${got.subarray(at, at + 16).toString('hex')} want ${want.subarray(at, at + 16).toString('hex')} ${createHash('sha1').update(got).digest('hex').slice(0, 8)}`;
}

it('relays 2000 distinct bodies, 64 at a time on one session, byte for byte', async () => {
  const sizes = [1, 100, 1000, 4095, 4096, 4097, 16_384, 40_000, 65_536, 70_000, 200_000];
  const bad: string[] = [];
  let next = 0;
  const total = 2000;
  const worker = async () => {
    while (next < total) {
      const id = next++;
      const r = await roundTrip(id, sizes[id % sizes.length]!);
      if (r) bad.push(r);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  expect(bad).toEqual([]);
}, 300_000);
