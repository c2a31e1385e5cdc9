// A stream of Node's HTTP/2 server as the front (server/front.ts) handles it: refuse with a final
// status, relay to an upstream socket (tunnel.ts), or hand the stream itself over as the Duplex.
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { dialFailure, type DialTarget } from '../server/contract.ts';
import type { FrontStream, StreamEnd } from '../server/front.ts';
import { connectFd, dialErrorCode } from './dial.ts';
import { tunnel } from './tunnel.ts';

export class NodeFrontStream implements FrontStream {
  constructor(
    private readonly stream: ServerHttp2Stream,
    readonly headers: IncomingHttpHeaders,
  ) {}

  get token(): ServerHttp2Stream {
    return this.stream;
  }

  onGone(listener: () => void): () => void {
    this.stream.once('close', listener);
    return () => this.stream.off('close', listener);
  }

  refuse(status: number): Promise<{ status: number }> {
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.headersSent) return Promise.resolve({ status: 0 });
    stream.respond({ ':status': status }, { endStream: true });
    stream.close(); // RST_STREAM(NO_ERROR) once the response is out: a refused stream must not linger
    return Promise.resolve({ status });
  }

  async relay(upstream: Socket): Promise<StreamEnd> {
    if (this.gone()) {
      upstream.destroy();
      return { status: 0, sent: 0, received: 0 };
    }
    this.stream.respond({ ':status': 200 });
    return { status: 200, ...(await tunnel(this.stream, upstream, 'server')) };
  }

  /** Connects in JavaScript (connectFd), as the agent's handler did before `dial` existed. */
  async dial(target: DialTarget, settled: () => void): Promise<StreamEnd> {
    // The peer resetting the stream ends the connect attempt at once, as onConnect's signal did.
    const abort = new AbortController();
    const onClose = () => abort.abort();
    this.stream.once('close', onClose);
    if (this.gone()) abort.abort();
    let upstream: Socket;
    try {
      upstream = await connectFd(target.fd, target, target.timeoutMs, abort.signal);
    } catch (e) {
      return { ...(await this.refuse(503)), sent: 0, received: 0, reason: dialFailure(target, dialErrorCode(e)) };
    } finally {
      this.stream.off('close', onClose);
      settled();
    }
    return this.relay(upstream);
  }

  accept(use: (stream: Duplex) => void): Promise<StreamEnd> {
    const stream = this.stream;
    if (this.gone()) return Promise.resolve({ status: 0, sent: 0, received: 0 });
    const count = countBytes(stream);
    let error: string | undefined;
    stream.on('error', (e: NodeJS.ErrnoException) => (error ??= `stream: ${e.code ?? e.message}`));
    const done = new Promise<StreamEnd>((resolve) =>
      stream.once('close', () => {
        const code = stream.rstCode ?? constants.NGHTTP2_NO_ERROR;
        if (code !== constants.NGHTTP2_NO_ERROR) error ??= `stream reset (code ${code})`;
        resolve({ status: 200, sent: count.read, received: count.written, error });
      }),
    );
    stream.respond({ ':status': 200 });
    use(stream);
    return done;
  }

  private gone(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }
}

/**
 * Counts the bytes a Duplex hands out (read) and takes in (written) as they pass, for a stream the
 * caller reads and writes itself (Http2Stream keeps no byte counters of its own).
 */
function countBytes(stream: Duplex): { read: number; written: number } {
  const n = { read: 0, written: 0 };
  const size = (chunk: unknown, encoding?: BufferEncoding) =>
    typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Uint8Array | null)?.byteLength ?? 0;
  const push = stream.push.bind(stream);
  stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
    n.read += size(chunk, encoding);
    return push(chunk, encoding);
  };
  const write = stream._write.bind(stream);
  stream._write = (chunk: unknown, encoding: BufferEncoding, cb: (e?: Error | null) => void) => {
    n.written += size(chunk, encoding);
    write(chunk, encoding, cb);
  };
  const writev = stream._writev?.bind(stream);
  if (writev) {
    stream._writev = (chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>, cb: (e?: Error | null) => void) => {
      for (const c of chunks) n.written += size(c.chunk, c.encoding);
      writev(chunks, cb);
    };
  }
  return n;
}
