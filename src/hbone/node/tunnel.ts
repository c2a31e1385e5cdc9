// Copies bytes both ways between an HBONE stream and a TCP socket, honouring half-close
// (END_STREAM <-> FIN) and mapping failures the way RFC 9113 §8.5 asks of a CONNECT proxy:
// a TCP error resets the stream with CONNECT_ERROR, a stream reset resets the TCP connection.
// Bytes are counted by the socket at the end, never per chunk; forward.ts does the copying.
// (Moved from src/hbone/tunnel.ts: it is the Node transport's relay of a stream.)
import { constants, type Http2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { TunnelResult } from '../client/contract.ts';
import { SOCKET_CLOSED_BEFORE_TUNNEL } from '../client/failures.ts';
import { RELAY_BUFFER, forward, setHighWaterMark } from '../forward.ts';

export type { TunnelResult };

/**
 * Which end of the tunnel this is, for the counters (`sent` flows from the HBONE client toward the
 * server): the client's socket is the app (read: sent), the server's socket is the upstream (written: sent).
 */
export type TunnelSide = 'client' | 'server';

export function tunnel(stream: Http2Stream, socket: Socket, side: TunnelSide): Promise<TunnelResult> {
  const result = (error?: string): TunnelResult =>
    side === 'client'
      ? { sent: socket.bytesRead, received: socket.bytesWritten, error }
      : { sent: socket.bytesWritten, received: socket.bytesRead, error };
  if (socket.destroyed) {
    // Its 'close' has been and gone, so nothing below would ever end the stream: cancel it now, or it
    // holds its session's stream slot, the far side's upstream and the window until the session ends.
    if (!stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
    return Promise.resolve({ sent: 0, received: 0, error: SOCKET_CLOSED_BEFORE_TUNNEL });
  }
  return new Promise((resolve) => {
    let error: string | undefined;
    let open = 2;
    const done = () => {
      if (--open === 0) resolve(result(error));
    };
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error ??= `tcp: ${e.code ?? e.message}`;
      if (!stream.destroyed) stream.close(constants.NGHTTP2_CONNECT_ERROR);
    });
    stream.on('error', (e: NodeJS.ErrnoException) => {
      error ??= `stream: ${e.code ?? e.message}`;
    });
    stream.on('close', () => {
      const code = stream.rstCode ?? constants.NGHTTP2_NO_ERROR;
      if (code !== constants.NGHTTP2_NO_ERROR) {
        error ??= `stream reset (code ${code})`;
        // Once our FIN is on its way libuv refuses the reset (EINVAL), and Node then never emits
        // 'close': the tunnel would never end. The app has had our FIN; closing is all that is left.
        if (socket.writableEnded) socket.destroy();
        else socket.resetAndDestroy();
      } else if (!socket.destroyed && !socket.readableEnded) {
        // Stopped with NO_ERROR while the socket still sends: nothing more can flow, so deliver what
        // arrived, then close rather than leave a half-open socket hanging.
        socket.end(() => socket.destroy());
      }
      done();
    });
    socket.on('close', done);
    setHighWaterMark(stream, RELAY_BUFFER);
    setHighWaterMark(socket, RELAY_BUFFER);
    forward(stream, socket);
    forward(socket, stream);
    socket.resume();
  });
}
