// After a connection error (RFC 9113 5.4.1) nghttp2 sends GOAWAY and writes nothing more, and Node
// stops reading the socket without any event ('error', 'goaway', 'frameError' stay silent). So the
// peer's FIN is never seen and the session, its streams and the fd would wait for the keepalive.
// Such a session is recognizable: frames stay in nghttp2's queue while the socket has nothing
// pending (a peer that merely reads slowly keeps bytes queued on the socket instead) and nothing
// was written since the last check. A look at the queue alone is not enough: a busy session has
// frames queued at most instants (sent at the end of the event-loop turn, or after the TLS write in
// flight completes), and was destroyed with GOAWAY(INTERNAL_ERROR) under load.
import type { Http2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export const STALL_CHECK_MS = 1000;

/**
 * Destroys `session` once nghttp2 holds a frame over two checks in a row with nothing queued on the
 * socket and no byte written in between, and the socket once a destroyed session has not closed it
 * over two checks.
 */
export function destroyWhenStalled(session: Http2Session, socket: TLSSocket, checkMs = STALL_CHECK_MS): void {
  // The TCP handle under the TLS socket: its libuv write queue is what a slow reader fills.
  const tcp = (socket as TLSSocket & { _parent?: Socket & { _handle?: { writeQueueSize?: number } } })._parent;
  let lastRead = -1;
  let lastWritten = -1;
  let stalled = 0;
  let unclosed = 0;
  const tick = setInterval(() => {
    // Node closes a destroyed session's socket only after the write in progress completes; a
    // peer that stopped reading and left never lets it, and session and fd would stay forever.
    if (session.destroyed) return void (++unclosed >= 2 && socket.destroy());
    const held = session.state.outboundQueueSize ?? 0;
    const pending = tcp?._handle?.writeQueueSize;
    // What the session handed to TLS (counted by the handle, so HTTP/2's own writes count too).
    const written = socket.bytesWritten;
    const idle = written === lastWritten;
    lastWritten = written;
    stalled = held > 0 && pending === 0 && idle ? stalled + 1 : 0;
    if (stalled >= 2) return void session.destroy(new Error('HTTP/2 session writes nothing more (GOAWAY after a connection error)'));
    // New input may have ended the session: queue a PING, which a live session sends at once.
    const read = socket.bytesRead;
    if (read === lastRead || held > 0) return;
    lastRead = read;
    try {
      session.ping(() => {});
    } catch {} // closed under us: 'close' stops the timer
  }, checkMs);
  tick.unref();
  session.once('close', () => clearInterval(tick));
}
