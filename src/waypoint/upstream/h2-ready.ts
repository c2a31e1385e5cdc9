// The wait for an HTTP/2 client session's first SETTINGS: the session can carry streams once
// 'connect' fires; a close or error before then is the connection's failure.
import type { ClientHttp2Session } from 'node:http2';

export function whenConnected(session: ClientHttp2Session): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const failed = (e?: Error) => reject(e ?? new Error('HTTP/2 session closed before its settings'));
    session.once('connect', () => {
      session.off('close', failed);
      session.off('error', failed);
      resolve();
    });
    session.once('close', failed);
    session.once('error', failed);
  });
}
