// forward(): one relay direction with backpressure, half-close, and bulk chunks batched per turn.
import { PassThrough, Writable } from 'node:stream';
import { expect, it } from 'vitest';
import { BULK_CHUNK, forward, RELAY_BUFFER, setHighWaterMark } from '../../../../src/agent/proxy/hbone/forward.ts';

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
