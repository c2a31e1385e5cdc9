// The front's decision handling as a table, like ztunnel's build_request tests: each request and
// decision against the status the peer gets and the outcome reported, on both transports (Node's
// tls/http2 and the native relay) wherever the case reaches the transport, with real TLS. A `dial`
// decision must read exactly as the dial the caller made itself (`upstream`) did.
import type { ClientHttp2Session, OutgoingHttpHeaders } from 'node:http2';
import type { Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConnect } from '../../../src/hbone/server/front.ts';
import type { ConnectDecision, HboneOutcome, HboneRequestInfo } from '../../../src/hbone/server/contract.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';
import { connectTo, dialSockets, echo, startBlackhole, tcpServer, until } from '../harness.ts';
import { createCa } from '../pki.ts';
import { TRANSPORTS, rawSession, startServer, type EitherServer } from './either.ts';

describe('parseConnect', () => {
  const table: Array<[string, Record<string, string>, ReturnType<typeof parseConnect>]> = [
    ['a CONNECT to ip:port', { ':method': 'CONNECT', ':authority': '10.0.0.7:8080' }, { authority: { address: '10.0.0.7', port: 8080 } }],
    ['a CONNECT to [ipv6]:port', { ':method': 'CONNECT', ':authority': '[FD00:0::1]:443' }, { authority: { address: 'fd00::1', port: 443 } }],
    ['another method', { ':method': 'GET', ':path': '/', ':authority': '10.0.0.7:80' }, { status: 400, reason: 'method GET is not CONNECT' }],
    ['no method', { ':authority': '10.0.0.7:80' }, { status: 400, reason: 'method undefined is not CONNECT' }],
    ['no authority', { ':method': 'CONNECT' }, { status: 400, reason: 'bad authority undefined' }],
    ['an authority without a port', { ':method': 'CONNECT', ':authority': '10.0.0.7' }, { status: 400, reason: 'bad authority 10.0.0.7' }],
    ['a hostname', { ':method': 'CONNECT', ':authority': 'cart.shop.svc:80' }, { status: 400, reason: 'bad authority cart.shop.svc:80' }],
    ['port 0', { ':method': 'CONNECT', ':authority': '10.0.0.7:0' }, { status: 400, reason: 'bad authority 10.0.0.7:0' }],
    ['a port above 65535', { ':method': 'CONNECT', ':authority': '10.0.0.7:65536' }, { status: 400, reason: 'bad authority 10.0.0.7:65536' }],
    ['an IPv6 zone', { ':method': 'CONNECT', ':authority': '[fe80::1%eth0]:80' }, { status: 400, reason: 'bad authority [fe80::1%eth0]:80' }],
  ];
  it.each(table)('%s', (_name, headers, expected) => {
    expect(parseConnect(headers)).toEqual(expected);
  });
});

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let closedPort: number;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let sockets: ReturnType<typeof dialSockets>;

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  const closed = await tcpServer(() => {});
  closedPort = closed.port;
  await new Promise((r) => closed.server.close(r)); // a port with nothing listening
  blackhole = await startBlackhole();
  sockets = dialSockets();
});
afterAll(() => {
  upstream.close();
  blackhole.close();
  sockets.close();
});

interface Case {
  name: string;
  headers: () => OutgoingHttpHeaders;
  decide?: (req: HboneRequestInfo) => Promise<ConnectDecision>;
  status: number;
  /** Whether onConnect is asked at all. */
  decided: boolean;
  outcome: (port: number) => Partial<HboneOutcome>;
}

const connect = (authority: string): OutgoingHttpHeaders => ({ ':method': 'CONNECT', ':authority': authority });

/** The agent's decision: the server dials the target with a socket it is handed. */
const dial = (timeoutMs?: number) => async (req: HboneRequestInfo): Promise<ConnectDecision> =>
  ({ status: 200, dial: { fd: sockets.take(4), address: req.authority.address, port: req.authority.port, timeoutMs } });

const cases: Case[] = [
  {
    name: 'bad method',
    headers: () => ({ ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${echoPort}` }),
    status: 400, decided: false,
    outcome: () => ({ status: 400, reason: 'method GET is not CONNECT', authority: undefined, sent: 0, received: 0 }),
  },
  {
    name: 'authority without a port',
    headers: () => connect('127.0.0.1'),
    status: 400, decided: false,
    outcome: () => ({ status: 400, reason: 'bad authority 127.0.0.1', authority: undefined }),
  },
  {
    name: 'authority with a hostname',
    headers: () => connect(`cart.shop.svc:${echoPort}`),
    status: 400, decided: false,
    outcome: () => ({ status: 400, reason: `bad authority cart.shop.svc:${echoPort}`, authority: undefined }),
  },
  {
    name: 'port 0',
    headers: () => connect('127.0.0.1:0'),
    status: 400, decided: false,
    outcome: () => ({ status: 400, reason: 'bad authority 127.0.0.1:0' }),
  },
  {
    name: 'deny decision',
    headers: () => connect(`127.0.0.1:${echoPort}`),
    decide: async () => ({ status: 401, reason: 'policy shop/deny-all' }),
    status: 401, decided: true,
    outcome: () => ({ status: 401, reason: 'policy shop/deny-all', authority: { address: '127.0.0.1', port: echoPort } }),
  },
  {
    name: 'error in the handler',
    headers: () => connect(`127.0.0.1:${echoPort}`),
    decide: async () => {
      throw new Error('no workload for that address');
    },
    status: 503, decided: true,
    outcome: () => ({ status: 503, reason: `connect 127.0.0.1:${echoPort}: no workload for that address` }),
  },
  {
    name: 'dial failure',
    headers: () => connect(`127.0.0.1:${closedPort}`),
    decide: async (req) => ({ status: 200, upstream: await connectTo(req.authority.port) }),
    status: 503, decided: true,
    outcome: () => ({ status: 503, reason: expect.stringMatching(new RegExp(`^connect 127\\.0\\.0\\.1:${closedPort}: .*ECONNREFUSED`)) as unknown as string }),
  },
  {
    name: 'accept (relay to the upstream)',
    headers: () => connect(`127.0.0.1:${echoPort}`),
    decide: async (req) => ({ status: 200, upstream: await connectTo(req.authority.port) }),
    status: 200, decided: true,
    outcome: () => ({ status: 200, sent: 4, received: 4 }),
  },
  // A `dial` decision reads as the agent's own dial did: the same status, reason and bytes.
  {
    name: 'dial (the server connects, then relays)',
    headers: () => connect(`127.0.0.1:${echoPort}`),
    decide: dial(),
    status: 200, decided: true,
    outcome: () => ({ status: 200, sent: 4, received: 4 }),
  },
  {
    name: 'dial refused',
    headers: () => connect(`127.0.0.1:${closedPort}`),
    decide: dial(),
    status: 503, decided: true,
    outcome: () => ({ status: 503, sent: 0, received: 0, reason: `connect 127.0.0.1:${closedPort}: ECONNREFUSED` }),
  },
  {
    name: 'dial timeout',
    headers: () => connect(`127.0.0.1:${blackhole.port}`),
    decide: dial(300),
    status: 503, decided: true,
    outcome: () => ({ status: 503, sent: 0, received: 0, reason: `connect 127.0.0.1:${blackhole.port}: ETIMEDOUT` }),
  },
];

/** Sends one request; resolves with the response status and, for 200, what the tunnel echoed after 'ping'. */
function send(session: ClientHttp2Session, headers: OutgoingHttpHeaders): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const st = session.request(headers, { endStream: false });
    st.once('error', reject);
    st.once('response', (h) => {
      const status = Number(h[':status']);
      if (status !== 200) return resolve({ status, body: '' });
      const chunks: Buffer[] = [];
      st.on('data', (c: Buffer) => chunks.push(c));
      st.once('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
      st.end('ping');
    });
  });
}

describe.each(TRANSPORTS)('the front on the %s transport', (kind) => {
  let s: EitherServer;
  let session: ClientHttp2Session;
  beforeAll(async () => {
    s = await startServer(kind, serverCreds);
    session = await rawSession(s.port, clientCreds);
  });
  afterAll(async () => {
    session.destroy();
    await s.server.drain(100);
  });

  it.each(cases)('$name', async (c) => {
    const requests = s.requests.length;
    const outcomes = s.outcomes.length;
    s.decide = c.decide ?? (async () => ({ status: 503, reason: 'not expected to be asked' }));
    const r = await send(session, c.headers());
    expect(r.status).toBe(c.status);
    if (r.status === 200) expect(r.body).toBe('ping');
    expect(s.requests.length - requests).toBe(c.decided ? 1 : 0);
    await until(() => s.outcomes.length > outcomes, 5000, 'outcome');
    expect(s.outcomes.length - outcomes).toBe(1);
    const o = s.outcomes.at(-1)!;
    expect(o).toMatchObject({ peerAddress: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as unknown as string, ...c.outcome(s.port) });
    expect(o.error).toBeUndefined(); // nothing broke: every case ends as the peer was told
    expect(o.peer).toEqual({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' });
    if (c.decided) expect(o.stream).toBe(s.requests.at(-1)!.stream);
    await until(() => s.server.stats().streams === 0, 5000, 'no stream left');
  });

  // The signal is made only when a handler reads it: one read after the peer left must be aborted too.
  it.each(['before', 'after'] as const)('aborts the signal of a decision whose peer reset the stream %s the handler read it', async (when) => {
    const outcomes = s.outcomes.length;
    let asked!: () => void;
    const wasAsked = new Promise<void>((r) => (asked = r));
    let reset!: () => void;
    const wasReset = new Promise<void>((r) => (reset = r));
    let aborted: unknown;
    s.decide = async (req) => {
      const early = when === 'after' ? req.signal : undefined; // read now, reset later
      asked();
      await wasReset;
      await new Promise((r) => setTimeout(r, 200)); // the reset reaches the server meanwhile
      const signal = early ?? req.signal;
      if (!signal.aborted) await Promise.race([new Promise((r) => signal.addEventListener('abort', r)), new Promise((r) => setTimeout(r, 5000))]);
      aborted = signal.aborted && (signal.reason as Error).message;
      return { status: 503, reason: 'gone' };
    };
    const st = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` }, { endStream: false });
    st.on('error', () => {});
    await wasAsked;
    st.close(8); // CANCEL
    reset();
    await until(() => s.outcomes.length > outcomes, 10_000, 'outcome');
    expect(aborted).toBe('peer reset the stream');
  });
});
