// forward(): one relay direction with backpressure, half-close, and bulk chunks batched per turn.
import { PassThrough, Writable } from 'node:stream';
import { expect, it } from 'vitest';
import { BULK_CHUNK, forward, RELAY_BUFFER, setHighWaterMark } from '../../src/hbone/forward.ts';

/** A sink recording each write call (writev batches count once) and holding callbacks when asked. */
function sink(hold = false) {
  const calls: number[][] = [];
  const held: (() => void)[] = [];
  const w = new Writable({
    highWaterMark: 16,
    writev(chunks, cb) {
      calls.push(chunks.map((c) => (c.chunk as Buffer).length));
      if (hold) held.push(() => cb());
      else cb();
    },
    write(chunk: Buffer, _enc, cb) {
      calls.push([chunk.length]);
      if (hold) held.push(() => cb());
      else cb();
    },
  });
  return { w, calls, held };
}

it('writes small chunks at once and batches bulk chunks into one writev per event-loop turn', async () => {
  const src = new PassThrough();
  const { w, calls } = sink();
  setHighWaterMark(w as never, RELAY_BUFFER);
  forward(src, w);
  src.write(Buffer.alloc(100));
  await new Promise((r) => setImmediate(r));
  expect(calls).toEqual([[100]]);
  for (let i = 0; i < 4; i++) src.write(Buffer.alloc(BULK_CHUNK));
  src.write(Buffer.alloc(10)); // a small tail in the same turn joins the batch
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  expect(calls.slice(1)).toEqual([[BULK_CHUNK, BULK_CHUNK, BULK_CHUNK, BULK_CHUNK, 10]]);
});

it('pauses the source while the destination is full and resumes on drain', async () => {
  const src = new PassThrough();
  const { w, held } = sink(true);
  forward(src, w);
  src.write(Buffer.alloc(64)); // above the sink's 16-byte buffer
  await new Promise((r) => setImmediate(r));
  expect(src.isPaused()).toBe(true);
  held.shift()!();
  await new Promise((r) => setImmediate(r));
  expect(src.isPaused()).toBe(false);
});

it('ends the destination when the source ends (half-close), flushing a pending batch', async () => {
  const src = new PassThrough();
  const { w, calls } = sink();
  forward(src, w);
  const finished = new Promise((r) => w.once('finish', r));
  src.write(Buffer.alloc(BULK_CHUNK));
  src.end(Buffer.alloc(BULK_CHUNK));
  await finished;
  expect(calls.flat().reduce((a, b) => a + b, 0)).toBe(2 * BULK_CHUNK);
});

it('raises both buffer limits of a duplex', () => {
  const d = new PassThrough();
  setHighWaterMark(d, RELAY_BUFFER);
  expect(d.readableHighWaterMark).toBe(RELAY_BUFFER);
  expect(d.writableHighWaterMark).toBe(RELAY_BUFFER);
});

it('relays a TCP socket through pooled read buffers, big and small, honouring half-close', async () => {
  const net = await import('node:net');
  const { pooledReadBuffers } = await import('../../src/hbone/forward.ts');
  // upstream: counts what arrives, answers "n" when the client half-closes.
  const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(String(n)));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as { port: number }).port;
  // the relay under test: accepted (paused) socket → forward → dialled socket, and back.
  const relay = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (down) => {
    const up = net.connect({ port: upPort, host: '127.0.0.1', allowHalfOpen: true }, () => {
      forward(down, up);
      forward(up, down);
    });
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  const relayPort = (relay.address() as { port: number }).port;
  try {
    const total = 8 * 1024 * 1024 + 5;
    const reply = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ port: relayPort, host: '127.0.0.1', allowHalfOpen: true }, () => {
        c.write(Buffer.alloc(5, 1));
        c.end(Buffer.alloc(total - 5, 2));
      });
      let got = '';
      c.on('data', (d: Buffer) => (got += String(d)));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(reply).toBe(String(total));
    expect(pooledReadBuffers()).toBeGreaterThan(0); // read buffers came back for reuse
  } finally {
    relay.close();
    upstream.close();
  }
});
