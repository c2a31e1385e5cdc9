// A workaround both directions of the waypoint need (inbound tunnels, upstream tunnels), kept in one place.
import type { Duplex } from 'node:stream';

type WriteCb = (e?: Error | null) => void;
type Chunk = { chunk: unknown; encoding: BufferEncoding };

const empty = (c: Chunk) => (typeof c.chunk === 'string' ? c.chunk.length === 0 : (c.chunk as Uint8Array).byteLength === 0);

/**
 * Makes node:http's writes safe on a Node HTTP/2 stream (the Node transport's tunnel; seen on
 * v20.20.2). node:http ends a message with an empty write ('') corked with the last data. An
 * Http2Stream completes a vectored write with its last chunk, and nghttp2 drops an empty chunk at
 * the head of the stream's queue and completes it as soon as it asks for more data: while the
 * chunks before it are gathered for the socket but not yet handed to TLS. The write callbacks then
 * fire early and the chunks are released: a string's storage is freed at once (a status line or a
 * request line arrived with its bytes replaced), a Buffer when the GC runs (under load, a body
 * arrived with its first bytes replaced by allocator data). So empty chunks never reach a vectored
 * write, and strings become Buffers.
 */
export function buffersOnly<D extends Duplex>(d: D): D {
  const asBuffer = (c: Chunk): Chunk => (typeof c.chunk === 'string' ? { chunk: Buffer.from(c.chunk, c.encoding), encoding: 'buffer' as BufferEncoding } : c);
  const write = d._write.bind(d);
  d._write = (chunk: unknown, encoding: BufferEncoding, cb: WriteCb) => {
    const c = asBuffer({ chunk, encoding });
    write(c.chunk, c.encoding, cb);
  };
  const writev = d._writev?.bind(d);
  if (writev) {
    d._writev = (chunks: Chunk[], cb: WriteCb) => {
      const out = Object.assign(chunks.filter((c) => !empty(c)).map(asBuffer), { allBuffers: true });
      // Nothing but empty chunks: one alone is harmless (it carries no data that could go early).
      if (!out.length) return d._write(Buffer.alloc(0), 'buffer' as BufferEncoding, cb);
      writev(out, cb);
    };
  }
  return d;
}
