// Opens one client HBONE session: dial (handed in: the socket must leave from the source pod's
// netns), mutual TLS 1.3 checking the server's SPIFFE identity rather than a hostname, then HTTP/2.
// The session counts as open only once the server's SETTINGS arrive: in TLS 1.3 the client finishes
// its handshake before the server has judged our certificate, so a rejection shows up only after.
import http2, { constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { HboneError, StreamRefused } from './errors.ts';
import { expectSpiffe } from './identity.ts';
import { keepAlive } from './keepalive.ts';
import { ALPN, CONNECTION_WINDOW, H2_SETTINGS, MAX_SESSION_MEMORY_MB, secureContextOptions, type Credentials } from './settings.ts';
import { formatAuthority } from './authority.ts';
import type { HboneConnectRequest, HboneTunnel, PoolSession } from './pool.ts';
import { tunnel } from './tunnel.ts';

export interface SessionParams {
  dial: () => Promise<Socket>;
  credentials: Credentials;
  /** Whose credentials they are (one TLS context per identity in the native relay). */
  srcIdentity?: string;
  dstIdentity: string;
  dstAddress: string;
  port: number;
  timeoutMs: number;
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export function openSession(p: SessionParams): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    let stage: 'dial' | 'tls' | 'h2' | 'done' = 'dial';
    let raw: Socket | undefined;
    let secure: TLSSocket | undefined;
    let session: ClientHttp2Session | undefined;
    const target = formatAuthority({ address: p.dstAddress, port: p.port });
    const fail = (err: HboneError) => {
      if (stage === 'done') return;
      stage = 'done';
      clearTimeout(timer);
      session?.destroy();
      secure?.destroy();
      raw?.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new HboneError('timeout', `HBONE connect to ${target} timed out in ${stage}`)), p.timeoutMs);

    p.dial().then(
      (sock) => {
        if (stage === 'done') return void sock.destroy(); // timed out meanwhile
        raw = sock;
        stage = 'tls';
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
        secure.once('error', (e) => fail(new HboneError('tls', `TLS with ${target}: ${e.message}`, undefined, { cause: e })));
        secure.once('secureConnect', () => onSecure(secure!));
      },
      (e: NodeJS.ErrnoException) => fail(new HboneError('dial', `dial ${target}: ${e.code ?? e.message}`, undefined, { cause: e })),
    );

    const onSecure = (s: TLSSocket) => {
      if (s.alpnProtocol !== 'h2') return fail(new HboneError('tls', `${target} negotiated ALPN ${s.alpnProtocol || 'none'}, not h2`));
      stage = 'h2';
      session = http2.connect(`https://${target}`, {
        createConnection: () => s,
        settings: H2_SETTINGS,
        maxSessionMemory: MAX_SESSION_MEMORY_MB,
      });
      // Errors before SETTINGS are the server refusing us (bad certificate, wrong trust domain).
      const early = (e?: Error) =>
        fail(new HboneError('tls', `${target} closed the connection before HTTP/2 settings${e ? `: ${e.message}` : ''}`, undefined, { cause: e }));
      session.once('error', early);
      session.once('close', early);
      session.once('remoteSettings', () => {
        if (stage === 'done') return;
        stage = 'done';
        clearTimeout(timer);
        const ready = session!;
        ready.off('error', early);
        ready.off('close', early);
        ready.on('error', () => {}); // the pool retires the session on 'close'
        ready.setLocalWindowSize(CONNECTION_WINDOW);
        keepAlive(ready, p.pingIntervalMs, p.pingTimeoutMs, s);
        resolve(ready);
      });
    };
  });
}

/** A tunnel on Node's HTTP/2: the stream itself, with an 'error' listener attached (failures surface on 'close'). */
export interface JsTunnel extends HboneTunnel {
  stream: ClientHttp2Stream;
}

/** The pool's view of a Node HTTP/2 client session. */
class JsPoolSession implements PoolSession<JsTunnel> {
  constructor(private readonly session: ClientHttp2Session) {}

  request(req: HboneConnectRequest, timeoutMs: number, released: () => void): Promise<JsTunnel> {
    let stream: ClientHttp2Stream;
    try {
      stream = this.session.request({ ':method': 'CONNECT', ':authority': req.authority, ...req.headers }, { endStream: false });
    } catch (e) {
      released();
      return Promise.reject(new StreamRefused('stream', `HBONE session unusable: ${(e as Error).message}`, undefined, { cause: e }));
    }
    stream.on('error', () => {});
    stream.once('close', released);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new HboneError('timeout', `HBONE CONNECT ${req.authority}: no response in ${timeoutMs} ms`));
      }, timeoutMs);
      const onClose = () => {
        clearTimeout(timer);
        reject(closedBeforeResponse(req.authority, stream.rstCode ?? constants.NGHTTP2_NO_ERROR));
      };
      stream.once('close', onClose);
      stream.once('response', (headers) => {
        clearTimeout(timer);
        stream.off('close', onClose);
        const status = Number(headers[':status']);
        if (status === 200) return resolve({ status, stream, relay: (s) => tunnel(stream, s) });
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new HboneError('status', `HBONE CONNECT ${req.authority}: ${status}`, status));
      });
    });
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

/** A stream that ended before any response: REFUSED_STREAM may be retried on another session. */
export function closedBeforeResponse(authority: string, code: number): HboneError {
  const msg = `HBONE CONNECT ${authority}: stream closed before a response (code ${code})`;
  return code === constants.NGHTTP2_REFUSED_STREAM ? new StreamRefused('stream', msg) : new HboneError('stream', msg);
}

export const openJsSession = (p: SessionParams): Promise<PoolSession<JsTunnel>> => openSession(p).then((s) => new JsPoolSession(s));
