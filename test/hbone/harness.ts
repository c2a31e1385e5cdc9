// Shared fixtures for HBONE tests: upstream TCP servers, an HBONE server with a recording
// onConnect, and a raw dial to it. Everything on 127.0.0.1 with ephemeral ports.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHboneServer, type ConnectDecision, type HboneOutcome, type HboneRequest, type HboneServer } from '../../src/hbone/node/server.ts';
import { NetnsSocketPool } from '../../src/bpf/netns.ts';
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

/**
 * A listener with backlog 0 that never accepts, its accept queue filled by one connection: the
 * kernel drops every further SYN to it, so a dial there stays pending until someone gives up.
 * `close()` ends it (the python child exits when its stdin closes).
 */
export async function startBlackhole(): Promise<{ port: number; close: () => void }> {
  const script = "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()";
  const proc = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
    proc.once('error', reject);
  });
  const filler = net.connect(port, '127.0.0.1');
  filler.on('error', () => {});
  await new Promise((r) => filler.once('connect', r));
  return {
    port,
    close: () => {
      filler.destroy();
      proc.kill();
    },
  };
}

/** This process's open file descriptors. */
export const openFds = () => readdirSync('/proc/self/fd').length;

/**
 * Sockets of this netns in SYN-SENT toward 127.0.0.1:`port` (dials in flight there). Counted by
 * local address: /proc/net/tcp read while sockets come and go may list one twice.
 */
export function synSent(port: number): number {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const local = new Set<string>();
  for (const l of readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
    const f = l.trim().split(/\s+/);
    if (f[2] === `0100007F:${hex}` && f[3] === '02') local.add(f[1]!);
  }
  return local.size;
}

/** Unconnected nonblocking TCP sockets of this netns (the pod's dial sockets, as the agent makes them). */
export function dialSockets(): { take: (family: 4 | 6) => number; close: () => void } {
  const netnsFd = openSync('/proc/self/ns/net', 'r');
  const pool = new NetnsSocketPool(netnsFd, { nonblock: true });
  return {
    take: (family) => pool.take(family),
    close: () => {
      pool.close();
      closeSync(netnsFd);
    },
  };
}
