// One direction of a relay: bytes from a readable to a writable with backpressure — the part of
// stream.pipe() a proxy needs (the caller owns errors, resets and close) — tuned for the agent's
// costs per chunk (a JS callback, a write, a syscall, and garbage):
// - buffers of 256 KiB on both streams instead of Node's 16 KiB, so a 64 KiB socket read no longer
//   fills the HTTP/2 stream's buffer at once and pauses the socket (readStop/readStart) every chunk;
// - bulk data is corked and flushed once per event-loop turn (setImmediate), so the 16 KiB pieces
//   TLS and HTTP/2 deliver leave in one writev instead of a write each. Small chunks (requests,
//   responses) are written at once, adding no delay;
// - a TCP socket is read into buffers from process-wide free lists (net.Socket's `onread` mode),
//   handed to the writer as views and returned once written. Node would otherwise allocate a fresh
//   64 KiB buffer per read: at a gigabit that is ~100 MB/s of ArrayBuffers, which V8 counts as
//   external memory and answers with a major GC every few hundred ms in the agent. A socket holds
//   its next read buffer while idle, so reads start at 4 KiB and move to 64 KiB only while they
//   fill the buffer (bulk transfer); the held buffer goes back to its list when the socket closes.
import { Socket } from 'node:net';
import type { Duplex, Readable, Writable } from 'node:stream';

export const RELAY_BUFFER = 256 * 1024;
/** Chunks at least this large mark bulk transfer and are batched. */
export const BULK_CHUNK = 4096;
/** A bulk read (Node's own read size), and the read size of a socket that is not in bulk. */
export const READ_BUFFER = 64 * 1024;
export const SMALL_READ_BUFFER = 4 * 1024;

type State = { highWaterMark: number };

/** Raises a stream's buffer limits (Node has no option for HTTP/2 streams). */
export function setHighWaterMark(s: Duplex, bytes: number): void {
  const r = (s as unknown as { _readableState?: State })._readableState;
  const w = (s as unknown as { _writableState?: State })._writableState;
  if (r) r.highWaterMark = bytes;
  if (w) w.highWaterMark = bytes;
}

/** Free read buffers of one size, process-wide, at most `max` kept. */
class BufferList {
  private readonly free: Buffer[] = [];
  constructor(readonly size: number, private readonly max: number) {}
  get = () => this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  put = (b: Buffer) => void (b.length === this.size && this.free.length < this.max && this.free.push(b));
  get length() {
    return this.free.length;
  }
}
const big = new BufferList(READ_BUFFER, 32); // 2 MiB
const small = new BufferList(SMALL_READ_BUFFER, 256); // 1 MiB
const putBuffer = (b: Buffer) => (b.length === READ_BUFFER ? big.put(b) : small.put(b));

/** Buffers waiting for reuse (for tests). */
export const pooledReadBuffers = () => big.length + small.length;

// net.Socket keeps its `onread` settings under these symbols (Node 18-22), and an accepted
// socket can only get them after construction. Found by description on a probe socket; without
// them (another Node), forward() uses 'data' events.
interface OnreadSymbols {
  buffer: symbol;
  cb: symbol;
  gen: symbol;
}
let symbols: OnreadSymbols | null | undefined;
function onreadSymbols(): OnreadSymbols | null {
  if (symbols !== undefined) return symbols;
  const buffer = Buffer.alloc(1);
  const callback = () => {};
  const probe = new Socket({ onread: { buffer, callback } } as unknown as ConstructorParameters<typeof Socket>[0]);
  const own = Object.getOwnPropertySymbols(probe);
  const rec = probe as unknown as Record<symbol, unknown>;
  const by = (d: string) => own.find((x) => x.description === d);
  const [b, c, g] = [by('kBuffer'), by('kBufferCb'), by('kBufferGen')];
  symbols = b && c && g && rec[b] === buffer && rec[c] === callback && rec[g] === null ? { buffer: b, cb: c, gen: g } : null;
  probe.destroy();
  return symbols;
}

interface Handle {
  reading: boolean;
  readStart(): number;
  useUserBuffer(b: Uint8Array): void;
}

export function forward(src: Readable, dst: Writable): void {
  let corked = false;
  const flush = () => {
    corked = false;
    dst.uncork();
  };
  const write = (chunk: Buffer, done?: (e?: Error | null) => void): boolean => {
    if (!corked && chunk.length >= BULK_CHUNK && !dst.writableEnded) {
      corked = true;
      dst.cork();
      setImmediate(flush);
    }
    return dst.write(chunk, done);
  };
  src.once('end', () => dst.end());
  if (useReadBuffers(src, write, dst)) return;
  src.on('data', (chunk: Buffer) => {
    if (!write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
}

/** Switches a paused TCP socket to reading into pooled buffers; false if it cannot be. */
function useReadBuffers(src: Readable, write: (chunk: Buffer, done: (e?: Error | null) => void) => boolean, dst: Writable): boolean {
  if (!(src instanceof Socket) || (src as Socket & { encrypted?: boolean }).encrypted) return false;
  const sym = onreadSymbols();
  const handle = (src as unknown as { _handle?: Partial<Handle> | null })._handle;
  if (!sym || !handle || typeof handle.useUserBuffer !== 'function' || typeof handle.readStart !== 'function') return false;
  if (src.readableLength > 0 || src.readableEnded || src.readableFlowing === true || src.listenerCount('data') > 0) return false;
  const s = src as unknown as Record<symbol, unknown>;
  const first = small.get();
  let filled = false; // the last read filled its buffer: more is waiting, read big
  s[sym.buffer] = first;
  s[sym.gen] = () => (filled ? big.get() : small.get());
  s[sym.cb] = (n: number, buf: Buffer) => {
    filled = n === buf.length;
    return write(buf.subarray(0, n), (e) => !e && putBuffer(buf));
  };
  (handle as Handle).useUserBuffer(first);
  src.once('close', () => {
    // The buffer a closed socket held for its next read was never handed to a writer.
    const held = s[sym.buffer];
    s[sym.buffer] = null;
    if (Buffer.isBuffer(held)) putBuffer(held);
  });
  dst.on('drain', () => {
    const h = (src as unknown as { _handle?: Handle | null })._handle;
    if (h && !h.reading && !src.destroyed && !src.readableEnded) {
      h.reading = true;
      h.readStart();
    }
  });
  src.resume(); // as pipe() would: reading starts (or goes on) into the pooled buffers
  return true;
}
