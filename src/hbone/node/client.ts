// Client HBONE sessions on Node's tls and http2 (moved from src/hbone/client-session.ts: the Node
// transport's half of the client; deadlines and failure kinds are client/failures.ts's). Dial (handed
// in: the socket must leave from the source pod's netns), mutual TLS 1.3 checking the server's SPIFFE
// identity rather than a hostname, then HTTP/2. The session counts as open only once the server's
// SETTINGS arrive: in TLS 1.3 the client finishes its handshake before the server has judged our
// certificate, so a rejection shows up only after.
import http2, { constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { HboneConnectRequest, HboneTunnel, PoolSession, SessionParams } from '../client/contract.ts';
import { PendingConnect, SessionOpening, sessionUnusable } from '../client/failures.ts';
import { expectSpiffe } from './identity.ts';
import { ALPN, CONNECTION_WINDOW, H2_SETTINGS, MAX_SESSION_MEMORY_MB, secureContextOptions } from '../settings.ts';
import { keepAlive } from './keepalive.ts';
import { tunnel } from './tunnel.ts';
import { socketFromFd } from '../fd-socket.ts';

export function openSession(p: SessionParams): Promise<ClientHttp2Session> {
  const o = new SessionOpening<ClientHttp2Session>(p);
  const { target } = o;
  let raw: Socket | undefined;
  let secure: TLSSocket | undefined;
  let session: ClientHttp2Session | undefined;
  o.cleanup = () => {
    session?.destroy();
    secure?.destroy();
    raw?.destroy();
  };

  const onSecure = (s: TLSSocket) => {
    if (s.alpnProtocol !== 'h2') return o.fail('tls', `${target} negotiated ALPN ${s.alpnProtocol || 'none'}, not h2`);
    o.enter('h2');
    session = http2.connect(`https://${target}`, {
      createConnection: () => s,
      settings: H2_SETTINGS,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
    });
    // Errors before SETTINGS are the server refusing us (bad certificate, wrong trust domain).
    const early = (e?: Error) =>
      o.fail('tls', `${target} closed the connection before HTTP/2 settings${e ? `: ${e.message}` : ''}`, e);
    session.once('error', early);
    session.once('close', early);
    session.once('remoteSettings', () => {
      const ready = session!;
      if (!o.succeed(ready)) return;
      ready.off('error', early);
      ready.off('close', early);
      ready.on('error', () => {}); // the pool retires the session on 'close'
      ready.setLocalWindowSize(CONNECTION_WINDOW);
      keepAlive(ready, p.pingIntervalMs, p.pingTimeoutMs, s);
    });
  };

  o.dial((sock) => {
    raw = sock;
    o.enter('tls');
    // The TLS socket inherits this; HTTP/2 has its own half-close, and a peer's FIN must end the session.
    sock.allowHalfOpen = false;
    secure = tls.connect({
      socket: sock,
      ...secureContextOptions(p.credentials),
      ALPNProtocols: ALPN,
      servername: '', // no SNI: the server picks its identity from the address we dialled
      rejectUnauthorized: true,
      checkServerIdentity: expectSpiffe(p.dstIdentity),
    });
    secure.once('error', (e) => o.failTls(e.message, e));
    secure.once('secureConnect', () => onSecure(secure!));
  });
  return o.promise;
}

/** A tunnel on Node's HTTP/2: the stream itself, with an 'error' listener attached (failures surface on 'close'). */
export interface JsTunnel extends HboneTunnel {
  stream: ClientHttp2Stream;
}

/** The pool's view of a Node HTTP/2 client session. */
class JsPoolSession implements PoolSession<JsTunnel> {
  /** The last stream the peer's GOAWAYs say it processed, once one came: the lowest (a drain sends two). */
  private goawayLast?: number;

  constructor(private readonly session: ClientHttp2Session) {
    session.on('goaway', (_code: number, last: number) => (this.goawayLast = Math.min(last, this.goawayLast ?? last)));
  }

  request(req: HboneConnectRequest, timeoutMs: number, released: () => void): Promise<JsTunnel> {
    let stream: ClientHttp2Stream;
    try {
      stream = this.session.request({ ':method': 'CONNECT', ':authority': req.authority, ...req.headers }, { endStream: false });
    } catch (e) {
      released();
      return Promise.reject(sessionUnusable(e));
    }
    stream.on('error', () => {});
    stream.once('close', released);
    const pending = new PendingConnect<JsTunnel>(req.authority, timeoutMs, () => stream.close(constants.NGHTTP2_CANCEL));
    // Above a GOAWAY's last stream id the peer never processed the stream, whatever the GOAWAY's code
    // (RFC 9113 6.8; Node destroys a session on an error GOAWAY, with that code as the streams'):
    // refused, so the pool retries it on another session.
    const unprocessed = () => this.goawayLast !== undefined && !(stream.id !== undefined && stream.id <= this.goawayLast);
    const onClose = () => pending.closed(unprocessed() ? constants.NGHTTP2_REFUSED_STREAM : stream.rstCode ?? constants.NGHTTP2_NO_ERROR);
    stream.once('close', onClose);
    stream.once('response', (headers) => {
      stream.off('close', onClose);
      const status = Number(headers[':status']);
      if (!pending.response(status, () => ({ status: 200, stream, relay: (s) => tunnel(stream, typeof s === 'number' ? socketFromFd(s) : s, 'client') }))) {
        stream.close(constants.NGHTTP2_CANCEL);
      }
    });
    return pending.promise;
  }

  close(): void {
    this.session.close();
  }

  destroy(): void {
    this.session.destroy();
  }

  once(event: 'goaway' | 'close', listener: () => void): void {
    this.session.once(event, listener);
  }
}

export const openJsSession = (p: SessionParams): Promise<PoolSession<JsTunnel>> => openSession(p).then((s) => new JsPoolSession(s));
