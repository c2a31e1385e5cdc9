// Raw HTTP/2 frame sequences over real mutual TLS into both HBONE servers: Node's (server.ts) and
// the native relay's (native/server.ts). Properties: the server neither crashes nor hangs, every
// request it hands to onConnect is a CONNECT whose authority the reference spec accepts (with the
// same address and port), a legitimate CONNECT still tunnels after each hostile connection, and
// once every peer is gone no session or stream is left behind.
import http2 from 'node:http2';
import type { Server } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { createHboneServer, type ConnectDecision, type HboneRequestInfo, type PodHboneServer } from '../../src/hbone/node/server.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { connectTo, echo, tcpServer, until } from '../hbone/harness.ts';
import { createCa } from '../hbone/pki.ts';
import { fuzz, testTimeout } from './fuzz.ts';
import { encodeInput, h2Input, T, type H2Input } from './h2frames.ts';
import { refAuthority } from './ref-authority.ts';

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;

beforeAll(async () => {
  const ca = await createCa('weft fuzz root');
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer((s) => {
    s.on('error', () => {}); // the relay resets upstreams of reset streams
    echo(s);
  }));
});
afterAll(() => upstream?.close());

interface Target {
  server: PodHboneServer;
  port: number;
  /** Violations seen in onConnect (thrown later, from the property). */
  violations: string[];
}

/** onConnect: checks what the parser let through, and only ever dials the echo server. */
function decide(t: Target) {
  return async (req: HboneRequestInfo): Promise<ConnectDecision> => {
    const method = req.headers[':method'];
    const raw = req.headers[':authority'];
    const want = typeof raw === 'string' ? refAuthority(raw) : undefined;
    if (method !== 'CONNECT') t.violations.push(`onConnect got method ${String(method)}`);
    if (!want || want.address !== req.authority.address || want.port !== req.authority.port) {
      t.violations.push(`onConnect got authority ${JSON.stringify(req.authority)} from ${JSON.stringify(raw)}`);
    }
    if (req.authority.address !== '127.0.0.1' || req.authority.port !== echoPort) return { status: 503, reason: 'fuzz: not the echo server' };
    return { status: 200, upstream: await connectTo(echoPort) };
  };
}

// Short keepalive: a session whose peer stopped reading and then left goes only when the
// keepalive gives up on it; the leak check below then stays short.
const KEEPALIVE = { pingIntervalMs: 1000, pingTimeoutMs: 2000 };

async function startTarget(kind: 'node' | 'native'): Promise<Target> {
  const t: Target = { server: undefined as unknown as PodHboneServer, port: 0, violations: [] };
  if (kind === 'node') {
    const s = createHboneServer({ credentials: () => serverCreds, trustDomain: 'cluster.local', onConnect: decide(t), ...KEEPALIVE });
    await s.listen({ port: 0, host: '127.0.0.1' });
    t.server = s;
    t.port = s.address().port;
  } else {
    const s = new NativeHboneServer({ credentials: () => serverCreds, trustDomain: 'cluster.local', onConnect: decide(t), ...KEEPALIVE });
    await s.listen({ port: 0, host: '127.0.0.1' });
    t.server = s;
    t.port = s.address().port;
  }
  return t;
}

const tlsOptions = (port: number): tls.ConnectionOptions => ({
  port,
  host: '127.0.0.1',
  key: clientCreds.key,
  cert: clientCreds.certChain,
  ca: clientCreds.root,
  ALPNProtocols: ['h2'],
  checkServerIdentity: () => undefined,
});

/**
 * Sends the input over a fresh mTLS connection and listens until the server closes or goes
 * quiet. Returns the outcome: what the server answered with (GOAWAY code, RST codes, HEADERS).
 */
async function hostile(port: number, input: H2Input): Promise<string> {
  const s = tls.connect(tlsOptions(port));
  s.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    s.once('secureConnect', () => resolve());
    s.once('close', () => reject(new Error('TLS handshake with a valid client certificate failed')));
  });
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  const bytes = encodeInput(input);
  const size = Math.ceil(bytes.length / input.pieces);
  for (let i = 0; i < input.pieces && !s.destroyed; i++) {
    s.write(bytes.subarray(i * size, (i + 1) * size));
    await new Promise((r) => setImmediate(r));
  }
  const quiet = await Promise.race([closed.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 120))]);
  s.destroy();
  return summarize(Buffer.concat(got), quiet);
}

/** The server's frames, reduced to an outcome class. */
function summarize(b: Buffer, quiet: boolean): string {
  const seen = new Set<string>();
  for (let o = 0; o + 9 <= b.length; ) {
    const len = b.readUIntBE(o, 3);
    const type = b[o + 3]!;
    const p = b.subarray(o + 9, o + 9 + len);
    if (type === T.GOAWAY && p.length >= 8) seen.add(`goaway:${p.readUInt32BE(4)}`);
    else if (type === T.RST_STREAM && p.length >= 4) seen.add(`rst:${p.readUInt32BE(0)}`);
    else if (type === T.HEADERS) seen.add('headers');
    else if (type === T.DATA) seen.add('data');
    o += 9 + len;
  }
  return [...[...seen].sort(), quiet ? 'open' : 'closed'].join(',');
}

/** A well-behaved client: CONNECT to the echo server, bytes there and back. */
async function legitimate(port: number): Promise<void> {
  const s = tls.connect(tlsOptions(port));
  const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => s });
  session.on('error', () => {});
  try {
    const echoed = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('legitimate CONNECT timed out after a hostile connection')), 10_000);
      const st = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }, { endStream: false });
      let data = '';
      st.on('response', (h) => {
        if (h[':status'] !== 200) reject(new Error(`legitimate CONNECT got status ${String(h[':status'])}`));
      });
      st.on('data', (d: Buffer) => (data += d.toString()));
      st.on('end', () => {
        clearTimeout(timer);
        resolve(data);
      });
      st.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      st.end('still serving');
    });
    expect(echoed).toBe('still serving');
  } finally {
    session.destroy();
  }
}

describe.each(['node', 'native'] as const)('fuzz: %s HBONE server', (kind) => {
  let t: Target;
  // An unhandled rejection or exception would end the agent: each one fails the run it happened in.
  const escaped: unknown[] = [];
  const onEscape = (e: unknown) => escaped.push(e);
  beforeAll(async () => {
    t = await startTarget(kind);
    process.on('unhandledRejection', onEscape);
    process.on('uncaughtException', onEscape);
  });
  afterAll(async () => {
    process.off('unhandledRejection', onEscape);
    process.off('uncaughtException', onEscape);
    await t?.server.drain(200);
  });

  it(
    'survives hostile frame sequences and keeps serving a legitimate CONNECT',
    async () => {
      const { runs } = await fuzz(
        `hbone-${kind}`,
        h2Input(`127.0.0.1:${echoPort}`),
        async (input) => {
          const outcome = await hostile(t.port, input);
          await new Promise((r) => setTimeout(r, 20)); // let the server's ticks after the close run
          if (escaped.length) throw new Error(`escaped the server: ${escaped.splice(0).map((e) => (e as Error).stack ?? String(e)).join('; ')}`);
          if (t.violations.length) throw new Error(t.violations.splice(0).join('; '));
          await legitimate(t.port);
          return outcome;
        },
        { runTimeoutMs: 30_000 },
      );
      expect(runs).toBeGreaterThan(0);
      // Every peer has left: the server holds no session or stream for any of them.
      await until(() => t.server.stats().sessions === 0 && t.server.stats().streams === 0, 15_000, `${kind} server to release every session`).catch((e: Error) => {
        throw new Error(`${e.message}: ${JSON.stringify(t.server.stats())} left`);
      });
    },
    testTimeout(`hbone-${kind}`),
  );
});
