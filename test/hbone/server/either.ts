// An HBONE server on either transport (Node's tls/http2 or the native relay) with recording handlers,
// and a bare HTTP/2 client session to it for requests the pool would never send. Real TLS throughout.
import http2 from 'node:http2';
import tls from 'node:tls';
import { NativeHboneServer } from '../../../src/hbone/native/server.ts';
import { createHboneServer, type HboneServer } from '../../../src/hbone/node/server.ts';
import type { ConnectDecision, HboneOutcome, HboneRequestInfo } from '../../../src/hbone/server/contract.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';

export type Transport = 'node' | 'native';
export const TRANSPORTS: Transport[] = ['node', 'native'];

export interface EitherServer {
  server: HboneServer | NativeHboneServer;
  port: number;
  requests: HboneRequestInfo[];
  outcomes: HboneOutcome[];
  decide: (req: HboneRequestInfo) => Promise<ConnectDecision>;
}

export async function startServer(kind: Transport, credentials: Credentials): Promise<EitherServer> {
  const t: EitherServer = {
    server: undefined as unknown as HboneServer,
    port: 0,
    requests: [],
    outcomes: [],
    decide: async () => ({ status: 503, reason: 'no decision set' }),
  };
  const opts = {
    credentials: () => credentials,
    trustDomain: 'cluster.local',
    onConnect: (req: HboneRequestInfo) => {
      t.requests.push(req);
      return t.decide(req);
    },
    onComplete: (o: HboneOutcome) => t.outcomes.push(o),
  };
  t.server = kind === 'node' ? createHboneServer(opts) : new NativeHboneServer(opts);
  await t.server.listen({ port: 0, host: '127.0.0.1' });
  t.port = t.server.address().port;
  return t;
}

/** A bare HTTP/2 session over mutual TLS to `port`. */
export async function rawSession(port: number, creds: Credentials): Promise<http2.ClientHttp2Session> {
  const s = tls.connect({ port, host: '127.0.0.1', key: creds.key, cert: creds.certChain, ca: creds.root, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  await new Promise((r, j) => s.once('secureConnect', r).once('error', j));
  const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => s });
  session.on('error', () => {});
  return session;
}
