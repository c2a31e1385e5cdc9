// HTTP/2 PING keepalive: a peer that stops answering (a dead node, a silently dropped path) is
// detected within interval + timeout and its session destroyed, so pooled streams fail fast.
import type { Http2Session } from 'node:http2';

/** Node closes a destroyed session's socket only after its write in progress completes: a peer
 *  that stopped reading and left never lets it, so `socket` is destroyed this long after. */
const SOCKET_GRACE_MS = 1000;

export function keepAlive(session: Http2Session, intervalMs: number, timeoutMs: number, socket?: { destroy(): void }): void {
  let deadline: NodeJS.Timeout | undefined;
  const tick = setInterval(() => {
    if (deadline || session.destroyed) return; // one ping in flight at a time
    deadline = setTimeout(() => {
      session.destroy(new Error(`HTTP/2 ping unanswered for ${timeoutMs} ms`));
      if (socket) setTimeout(() => socket.destroy(), SOCKET_GRACE_MS).unref();
    }, timeoutMs);
    deadline.unref();
    // Only an answer disarms the deadline. A ping that cannot be sent (a closing session: Node
    // cancels its pings; too many outstanding) leaves it armed: such a session cannot prove its
    // peer alive, so its streams get until the deadline to finish rather than forever.
    try {
      session.ping((err) => {
        if (err) return;
        clearTimeout(deadline);
        deadline = undefined;
      });
    } catch {} // the session closed under us: its close handler stops the timers
  }, intervalMs);
  tick.unref();
  session.once('close', () => {
    clearInterval(tick);
    clearTimeout(deadline);
  });
}
