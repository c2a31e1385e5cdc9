// Messages with file descriptors over a Unix stream socket (SCM_RIGHTS): how a running agent hands
// its listening sockets to the one replacing it. A message is a 4-byte big-endian length and that
// many bytes of JSON; its fds ride on the first byte. The receiver reads exactly one message's
// bytes at a time, so the kernel never hands it the fds of the next one early.
import { closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { native } from './addon.ts';

/** Largest message accepted: a manifest of a few hundred pods is well under it. */
export const MAX_MESSAGE_BYTES = 4 << 20;
/** The kernel's SCM_MAX_FD: more fds than this go in several messages. */
export const MAX_FDS_PER_MESSAGE = 253;

export interface FdMessage<T = unknown> {
  body: T;
  fds: number[];
}

function frame(body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body));
  if (json.length > MAX_MESSAGE_BYTES) throw new Error(`message of ${json.length} bytes is over ${MAX_MESSAGE_BYTES}`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length);
  return Buffer.concat([head, json]);
}

/** The fd under a connected net.Socket (its libuv handle's). */
export function socketFd(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

/**
 * Sends one message on a nonblocking socket (a net.Socket's fd, which libuv keeps reading): waits
 * while the socket is full, sends what a partial write left without the fds (already delivered).
 */
export async function sendMessage(fd: number, body: unknown, fds: number[] = [], timeoutMs = 10_000): Promise<void> {
  if (fds.length > MAX_FDS_PER_MESSAGE) throw new Error(`${fds.length} fds in one message; at most ${MAX_FDS_PER_MESSAGE}`);
  let buf = frame(body);
  let pending = fds;
  const end = Date.now() + timeoutMs;
  while (buf.length > 0) {
    const n = native().sendFds(fd, buf, pending);
    if (n < 0) {
      if (Date.now() > end) throw new Error('peer does not read: message not sent in time');
      await sleep(2);
      continue;
    }
    buf = buf.subarray(n);
    pending = [];
  }
}

/** The blocking end (the process taking over, which has nothing else to serve yet). */
export class FdChannel {
  private constructor(readonly fd: number) {}

  /** Over a socket already connected (a socketpair's end): the channel owns it from here. */
  static fromFd(fd: number): FdChannel {
    return new FdChannel(fd);
  }

  /** Connects to `path`; undefined when nobody listens there (no file, or refused). */
  static connect(path: string): FdChannel | undefined {
    try {
      return new FdChannel(native().unixConnect(path));
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') return undefined;
      throw e;
    }
  }

  /** The next message, within timeoutMs; fds that arrive with a malformed message are closed. */
  receive<T>(timeoutMs: number): FdMessage<T> {
    const end = Date.now() + timeoutMs;
    const head = native().recvFds(this.fd, 4, timeoutMs);
    const fds = head.fds;
    try {
      if (head.data.length < 4) throw new Error('peer closed the channel');
      const len = head.data.readUInt32BE(0);
      if (len === 0 || len > MAX_MESSAGE_BYTES) throw new Error(`message length ${len} out of range`);
      const rest = native().recvFds(this.fd, len, Math.max(1, end - Date.now()));
      fds.push(...rest.fds); // none expected; kept so they are closed with the rest on error
      if (rest.data.length < len) throw new Error('peer closed the channel mid-message');
      return { body: JSON.parse(rest.data.toString('utf8')) as T, fds };
    } catch (e) {
      for (const f of fds) closeQuietly(f);
      throw e;
    }
  }

  send(body: unknown): void {
    const buf = frame(body);
    for (let off = 0; off < buf.length; ) {
      const n = native().sendFds(this.fd, buf.subarray(off), []);
      if (n < 0) throw new Error('handover channel is full');
      off += n;
    }
  }

  close(): void {
    closeQuietly(this.fd);
  }
}

export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    closeSync(fd);
  } catch {}
}
