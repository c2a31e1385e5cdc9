// Shared fixtures for HBONE tests: upstream TCP servers, an HBONE server with a recording
// onConnect, and a raw dial to it. Everything on 127.0.0.1 with ephemeral ports.
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHboneServer, type ConnectDecision, type HboneOutcome, type HboneRequest, type HboneServer } from '../../src/hbone/node/server.ts';
import type { HboneConnectRequest } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';

export const spiffe = (ns: string, sa: string, td = 'cluster.local') => `spiffe://${td}/ns/${ns}/sa/${sa}`;

/** A TCP server on 127.0.0.1 running `handler` per connection, half-open allowed. */
export async function tcpServer(handler: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Echoes until the client half-closes, then half-closes back. */
export const echo = (s: Socket) => s.pipe(s);

export function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export interface TestServer {
  hbone: HboneServer;
  port: number;
  requests: HboneRequest[];
  outcomes: HboneOutcome[];
  handshakeErrors: string[];
  /** The onConnect decision; by default connect to the authority. */
  decide: (req: HboneRequest) => Promise<ConnectDecision>;
}

export async function startHbone(credentials: () => Credentials, trustDomain = 'cluster.local'): Promise<TestServer> {
  const t: TestServer = {
    port: 0,
    requests: [],
    outcomes: [],
    handshakeErrors: [],
    decide: async (req) => {
      try {
        return { status: 200, upstream: await connectTo(req.authority.port) };
      } catch (e) {
        return { status: 503, reason: (e as Error).message };
      }
    },
    hbone: undefined as unknown as HboneServer,
  };
  t.hbone = createHboneServer({
    credentials,
    trustDomain,
    onConnect: (req) => {
      t.requests.push(req);
      return t.decide(req);
    },
    onComplete: (o) => t.outcomes.push(o),
    onHandshakeError: (_remote, reason) => t.handshakeErrors.push(reason),
  });
  await t.hbone.listen({ port: 0, host: '127.0.0.1' });
  t.port = t.hbone.address().port;
  return t;
}

/** Resolves with everything read until the readable side ends. */
export function readAll(s: Duplex): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks).toString()));
    s.once('error', reject);
  });
}

/** Polls `cond` until true, failing after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Where app connections enter, as the agent's capture listener hands them over: accepted unread. */
export async function frontDoor(): Promise<{ connection: () => Promise<{ app: Socket; agent: Socket }>; close: () => void }> {
  const waiting: Array<(s: Socket) => void> = [];
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => waiting.shift()?.(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    async connection() {
      const agent = new Promise<Socket>((r) => waiting.push(r));
      const app = await connectTo(port);
      return { app, agent: await agent };
    },
    close: () => server.close(),
  };
}

/** Sends `data`, half-closes, and reads everything back until the other side half-closes too. */
export function exchange(app: Socket, data: Buffer | string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    app.on('data', (c: Buffer) => chunks.push(c));
    app.once('end', () => resolve(Buffer.concat(chunks)));
    app.once('error', reject);
    app.end(data);
  });
}

/** A pool request from shop/web to shop/cart's HBONE server on `port`, for the upstream on `upstreamPort`. */
export function webToCart(port: number, upstreamPort: number, credentials: Credentials): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: spiffe('shop', 'web'), dstIdentity: spiffe('shop', 'cart'), dstAddress: '127.0.0.1' },
    port,
    authority: `127.0.0.1:${upstreamPort}`,
    headers: {},
    credentials,
    dial: () => connectTo(port),
  };
}
