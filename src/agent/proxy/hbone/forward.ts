// One direction of a relay: bytes from a readable to a writable with backpressure — the part of
// stream.pipe() a proxy needs (the caller owns errors, resets and close) — tuned for the agent's
// two costs per chunk, a JS write and a syscall:
// - buffers of 256 KiB on both streams instead of Node's 16 KiB, so a 64 KiB socket read no longer
//   fills the HTTP/2 stream's buffer at once and pauses the socket (readStop/readStart) every chunk;
// - bulk data is corked and flushed once per event-loop turn (setImmediate), so the 16 KiB pieces
//   TLS and HTTP/2 deliver leave in one writev instead of a write each. Small chunks (requests,
//   responses) are written at once, adding no delay.
import type { Duplex, Readable, Writable } from 'node:stream';

export const RELAY_BUFFER = 256 * 1024;
/** Chunks at least this large mark bulk transfer and are batched. */
export const BULK_CHUNK = 4096;

type State = { highWaterMark: number };

/** Raises a stream's buffer limits (Node has no option for HTTP/2 streams). */
export function setHighWaterMark(s: Duplex, bytes: number): void {
  const r = (s as unknown as { _readableState?: State })._readableState;
  const w = (s as unknown as { _writableState?: State })._writableState;
  if (r) r.highWaterMark = bytes;
  if (w) w.highWaterMark = bytes;
}

export function forward(src: Readable, dst: Writable): void {
  let corked = false;
  const flush = () => {
    corked = false;
    dst.uncork();
  };
  src.on('data', (chunk: Buffer) => {
    if (!corked && chunk.length >= BULK_CHUNK && !dst.writableEnded) {
      corked = true;
      dst.cork();
      setImmediate(flush);
    }
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.once('end', () => dst.end());
}
