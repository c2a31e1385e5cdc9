// Opens one client HBONE session: dial (handed in: the socket must leave from the source pod's
// netns), mutual TLS 1.3 checking the server's SPIFFE identity rather than a hostname, then HTTP/2.
// The session counts as open only once the server's SETTINGS arrive: in TLS 1.3 the client finishes
// its handshake before the server has judged our certificate, so a rejection shows up only after.
import http2, { type ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { HboneError } from './errors.ts';
import { expectSpiffe } from './identity.ts';
import { keepAlive } from './keepalive.ts';
import { ALPN, CONNECTION_WINDOW, H2_SETTINGS, MAX_SESSION_MEMORY_MB, secureContextOptions, type Credentials } from './settings.ts';
import { formatAuthority } from './authority.ts';

export interface SessionParams {
  dial: () => Promise<Socket>;
  credentials: Credentials;
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
        keepAlive(ready, p.pingIntervalMs, p.pingTimeoutMs);
        resolve(ready);
      });
    };
  });
}
