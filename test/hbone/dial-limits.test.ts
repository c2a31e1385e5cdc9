// A peer that opens many CONNECTs to a destination that never answers the SYN, on both inbound data
// paths: the dials one HBONE connection has in flight never exceed maxDialsPerSession (the rest get
// 503 without a dial), a legitimate tunnel on another connection is served meanwhile, and resetting
// the streams aborts their dials at once instead of at the connect timeout.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import net, { type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HboneAdmission } from '../../src/hbone/admission.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { HbonePool } from '../../src/hbone/pool.ts';
import { createHboneServer, type HboneOutcome, type HboneRequestInfo, type PodHboneServer } from '../../src/hbone/node/server.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { dialFromPod, podDialSockets } from '../../src/agent/proxy/pod-sockets.ts';
import { echo, readAll, tcpServer, until, webToCart } from './harness.ts';
import { createCa } from './pki.ts';

const CAP = 8;
const HOSTILE = 40;

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let blackhole: { proc: ChildProcess; port: number; filler: Socket };
let netnsFd: number;

/**
 * A listener with backlog 0 that never accepts, its accept queue filled by one connection: the
 * kernel drops every further SYN to it, so a dial there stays pending until someone gives up.
 */
async function startBlackhole(): Promise<typeof blackhole> {
  const script = "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()";
  const proc = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] }); // exits when our stdin pipe closes
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
    proc.once('error', reject);
  });
  const filler = net.connect(port, '127.0.0.1');
  filler.on('error', () => {});
  await new Promise((r) => filler.once('connect', r));
  return { proc, port, filler };
}

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  blackhole = await startBlackhole();
  netnsFd = openSync('/proc/self/ns/net', 'r');
});
afterAll(() => {
  upstream.close();
  blackhole.filler.destroy();
  blackhole.proc.kill();
  closeSync(netnsFd);
});

describe.each(['node', 'native'] as const)('%s HBONE server: upstream dials per connection', (path) => {
  let server: PodHboneServer & { address(): net.AddressInfo };
  let port: number;
  const outcomes: HboneOutcome[] = [];
  const admission = new HboneAdmission({ maxDialsPerSession: CAP });
  const pool = new HbonePool();
  let sockets: ReturnType<typeof podDialSockets>;
  let inFlight = 0;
  let maxInFlight = 0;

  beforeAll(async () => {
    sockets = podDialSockets(netnsFd); // the test's own netns stands in for the pod's
    const opts = {
      credentials: () => serverCreds,
      trustDomain: 'cluster.local',
      admission,
      // The agent's own dial (dialFromPod); those to the blackhole are counted while in flight.
      onConnect: async (req: HboneRequestInfo) => {
        const counted = req.authority.port === blackhole.port;
        if (counted) maxInFlight = Math.max(maxInFlight, ++inFlight);
        try {
          return { status: 200 as const, upstream: await dialFromPod(sockets, req.authority, 120_000, req.signal) };
        } catch (e) {
          return { status: 503 as const, reason: (e as Error).message };
        } finally {
          if (counted) inFlight--;
        }
      },
      onComplete: (o: HboneOutcome) => outcomes.push(o),
    };
    server = path === 'node' ? createHboneServer(opts) : new NativeHboneServer(opts);
    await server.listen({ port: 0, host: '127.0.0.1' } as never);
    port = server.address().port;
  });
  afterAll(async () => {
    pool.close(true);
    await server.drain(100);
    sockets.close();
  });

  const tunnel = async () => {
    const { stream } = await pool.connect(webToCart(port, echoPort, clientCreds));
    const back = readAll(stream);
    stream.end('ping');
    return back;
  };

  it(`holds at most ${CAP} dials for one connection, serves another, and aborts dials whose streams are reset`, async () => {
    const hostile: ClientHttp2Session = http2.connect(`https://127.0.0.1:${port}`, {
      key: clientCreds.key, cert: clientCreds.certChain, ca: clientCreds.root, checkServerIdentity: () => undefined,
    });
    hostile.on('error', () => {});
    try {
      const statuses: number[] = [];
      const streams: ClientHttp2Stream[] = [];
      for (let i = 0; i < HOSTILE; i++) {
        const s = hostile.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${blackhole.port}` });
        s.on('error', () => {});
        s.on('response', (h) => statuses.push(Number(h[':status'])));
        streams.push(s);
      }
      // Everything over the cap is refused at once; the cap's worth stays pending on the blackhole.
      await until(() => statuses.length >= HOSTILE - CAP, 10_000, 'the refusals over the cap');
      expect(statuses.every((s) => s === 503)).toBe(true);
      expect(inFlight).toBe(CAP);
      expect(admission.stats().refused.dialsPerSession).toBe(HOSTILE - CAP);
      expect(outcomes.some((o) => o.status === 503 && /CONNECTs pending/.test(o.reason ?? ''))).toBe(true);

      // Another connection is not held to the hostile one's count.
      expect(await tunnel()).toBe('ping');

      // The peer gives up: its pending dials end now, long before their connect timeout.
      for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      await until(() => inFlight === 0, 10_000, 'the reset streams\' dials to be aborted');
      expect(maxInFlight).toBe(CAP);

      // The count is of dials in flight, not a lifetime budget: the same connection dials again.
      const again = hostile.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${echoPort}` });
      const status = await new Promise<number>((r) => again.once('response', (h) => r(Number(h[':status']))));
      expect(status).toBe(200);
      again.close();
    } finally {
      hostile.destroy();
    }
  });
});
