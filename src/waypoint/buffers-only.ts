// A workaround both directions of the waypoint need (inbound tunnels, upstream tunnels), kept in one place.
import type { Duplex } from 'node:stream';

type WriteCb = (e?: Error | null) => void;
type Chunk = { chunk: unknown; encoding: BufferEncoding };

/**
 * node:http writes its status line and headers as latin1 strings, corked with the body. Through an
 * HTTP/2 stream (the Node transport's tunnel), a string beside a Buffer in one vectored write
 * arrived with the string's bytes replaced (seen on this Node, v20.20.2: a POST's request line, a
 * response's status line), so strings become Buffers before they reach the stream's own write.
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
      const out = Object.assign(chunks.map(asBuffer), { allBuffers: true });
      writev(out, cb);
    };
  }
  return d;
}
