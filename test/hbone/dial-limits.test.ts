// A peer that opens many CONNECTs to a destination that never answers the SYN, on both inbound data
// paths and for both ways of dialling (the caller's `upstream`, the server's `dial`): the dials one
// HBONE connection has in flight never exceed maxDialsPerSession (the rest get 503 without a dial),
// a legitimate tunnel on another connection is served meanwhile, and resetting the streams aborts
// their dials at once instead of at the connect timeout.
import { openSync, closeSync } from 'node:fs';
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import net, { type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HboneAdmission } from '../../src/hbone/admission.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { HbonePool } from '../../src/hbone/pool.ts';
import { createHboneServer, type HboneOutcome, type HboneRequestInfo, type PodHboneServer } from '../../src/hbone/node/server.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { dialFromPod, podDialSockets } from '../../src/agent/proxy/pod-sockets.ts';
import { echo, readAll, startBlackhole, synSent, tcpServer, until, webToCart } from './harness.ts';
import { createCa } from './pki.ts';

const CAP = 8;
const HOSTILE = 40;

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let netnsFd: number;

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
  blackhole.close();
  closeSync(netnsFd);
});

// `upstream`: the caller dials (dialFromPod) before deciding; `dial`: the server dials the socket it
// is handed (the agent's way since the native relay connects on its own thread). Either way the
// dials in flight are counted where they are, as sockets in SYN-SENT toward the blackhole.
describe.each([
  ['node', 'upstream'],
  ['native', 'upstream'],
  ['node', 'dial'],
  ['native', 'dial'],
] as const)('%s HBONE server, %s decisions: upstream dials per connection', (path, decision) => {
  let server: PodHboneServer & { address(): net.AddressInfo };
  let port: number;
  const outcomes: HboneOutcome[] = [];
  const admission = new HboneAdmission({ maxDialsPerSession: CAP });
  const pool = new HbonePool();
  let sockets: ReturnType<typeof podDialSockets>;
  let maxInFlight = 0;
  let sampler: NodeJS.Timeout;

  beforeAll(async () => {
    sockets = podDialSockets(netnsFd); // the test's own netns stands in for the pod's
    const opts = {
      credentials: () => serverCreds,
      trustDomain: 'cluster.local',
      admission,
      onConnect: async (req: HboneRequestInfo) => {
        if (decision === 'dial') {
          return { status: 200 as const, dial: { fd: sockets.take(4), address: req.authority.address, port: req.authority.port, timeoutMs: 120_000 } };
        }
        try {
          return { status: 200 as const, upstream: await dialFromPod(sockets, req.authority, 120_000, req.signal) };
        } catch (e) {
          return { status: 503 as const, reason: (e as Error).message };
        }
      },
      onComplete: (o: HboneOutcome) => outcomes.push(o),
    };
    server = path === 'node' ? createHboneServer(opts) : new NativeHboneServer(opts);
    await server.listen({ port: 0, host: '127.0.0.1' } as never);
    port = server.address().port;
    sampler = setInterval(() => (maxInFlight = Math.max(maxInFlight, synSent(blackhole.port))), 5);
  });
  afterAll(async () => {
    clearInterval(sampler);
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
      await until(() => synSent(blackhole.port) === CAP, 5000, `${CAP} dials in flight`);
      expect(admission.stats().refused.dialsPerSession).toBe(HOSTILE - CAP);
      expect(outcomes.some((o) => o.status === 503 && /CONNECTs pending/.test(o.reason ?? ''))).toBe(true);

      // Another connection is not held to the hostile one's count.
      expect(await tunnel()).toBe('ping');

      // The peer gives up: its pending dials end now, long before their connect timeout.
      for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      await until(() => synSent(blackhole.port) === 0, 10_000, 'the reset streams\' dials to be aborted');
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
