// Run in a child process by native-backpressure.test.ts: a relay thread that spins cannot be
// stopped from inside its own process, so the scenario lives here and the test kills this process
// when it does not finish in time.
//
// The case of issue #13 item 3: two busy streams on one native HBONE session whose TCP socket has a
// small send buffer (64 KiB, a slow link), then one stream's plaintext socket is reset while the
// session is write-blocked. `side` says which end sends: `client` (the app writes, its socket is
// reset) or `server` (the upstream writes, and resets). Prints `ok` and exits 0 when every round
// ended and a fresh tunnel still carries bytes afterwards.
import net, { type Socket } from 'node:net';
import { native } from '../../src/bpf/addon.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { relayAddon } from '../../src/hbone/native/addon.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { HbonePool, type HboneConnectRequest, type HboneTunnel } from '../../src/hbone/pool.ts';
import { connectTo, echo, exchange, frontDoor, spiffe, tcpServer, until } from './harness.ts';
import { createCa } from './pki.ts';

const side = process.argv[2];
if (side !== 'client' && side !== 'server') throw new Error('usage: native-backpressure.child.ts client|server');
const ROUNDS = 16; // the reset must land while that stream's frame waits: about half the rounds do
const SNDBUF = 64 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
const log = (m: string) => process.stderr.write(`[${side}] ${m}\n`);

/** Writes until the socket goes away or `stop()`; bounded so nothing runs on if the test breaks. */
function pump(s: Socket): () => void {
  let stopped = false;
  let left = 8192; // x 64 KiB = 512 MiB at most: busy until reset, never endless
  s.on('error', () => {});
  const go = () => {
    while (!stopped && !s.destroyed && left-- > 0) if (!s.write(CHUNK)) return void s.once('drain', go);
    if (!s.destroyed && !stopped) s.end();
  };
  go();
  return () => {
    stopped = true;
  };
}

/** A TCP socket with SO_SNDBUF set before it connects, as on a slow link. */
async function smallBufferDial(port: number): Promise<Socket> {
  const fd = native().socketInNetns(-1, { family: 4, sendBuffer: SNDBUF });
  const s = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.connect(port, '127.0.0.1', () => {
      s.off('error', reject);
      resolve();
    });
  });
  return s;
}

async function main(): Promise<void> {
  const ca = await createCa();
  const serverCreds = await ca.issue('shop', 'cart');
  const clientCreds = await ca.issue('shop', 'web');

  // Upstreams: a sink (the client sends), a source whose connections the test resets (the server
  // sends), and an echo for the tunnel that proves the relay still works afterwards.
  const sources: Socket[] = [];
  const sink = await tcpServer((s) => {
    s.on('error', () => {});
    s.on('end', () => s.end());
    s.resume();
  });
  const source = await tcpServer((s) => {
    sources.push(s);
    pump(s);
  });
  const echoSrv = await tcpServer(echo);

  const server = new NativeHboneServer({
    credentials: () => serverCreds,
    trustDomain: 'cluster.local',
    onConnect: async (req) => ({ status: 200, upstream: await connectTo(req.authority.port) }),
  });
  if (side === 'server') {
    // Accepted sockets inherit the listener's SO_SNDBUF: the server's session socket is the small one.
    const fd = native().socketInNetns(-1, { family: 4, sendBuffer: SNDBUF, bind: { address: '127.0.0.1', port: 0 }, listen: 511 });
    await server.listen({ fd });
  } else {
    await server.listen({ port: 0, host: '127.0.0.1' });
  }
  const port = server.address().port;
  const front = await frontDoor();
  const pool = new HbonePool<HboneTunnel>({ open: nativeSessionOpener() });
  const request = (upstreamPort: number): HboneConnectRequest => ({
    key: { scope: 'pod-web', srcIdentity: spiffe('shop', 'web'), dstIdentity: spiffe('shop', 'cart'), dstAddress: '127.0.0.1' },
    port,
    authority: `127.0.0.1:${upstreamPort}`,
    headers: {},
    credentials: clientCreds,
    dial: () => (side === 'client' ? smallBufferDial(port) : connectTo(port)),
  });

  for (let round = 0; round < ROUNDS; round++) {
    // Two busy streams on the one pooled session.
    const tunnels = await Promise.all([0, 1].map(async () => {
      const t = await pool.connect(request(side === 'client' ? sink.port : source.port));
      const { app, agent } = await front.connection();
      const relayed = t.relay(agent);
      app.on('error', () => {});
      const stop = side === 'client' ? pump(app) : (app.resume(), () => {});
      return { app, relayed, stop };
    }));
    log(`round ${round} streams open`);
    if (pool.stats().sessions !== 1) throw new Error(`expected one session, have ${pool.stats().sessions}`);
    // Let the session back up behind the small send buffer, then reset the first stream's socket.
    await new Promise((r) => setTimeout(r, 100 + 20 * round));
    if (side === 'client') tunnels[0]!.app.resetAndDestroy();
    else sources.splice(0).forEach((s, i) => (i === 0 ? s.resetAndDestroy() : undefined));
    log(`round ${round} reset`);
    log(`first: ${JSON.stringify(await tunnels[0]!.relayed)}`);
    // The other stream goes on until it is ended: the relay thread is not stuck.
    tunnels[1]!.stop();
    tunnels[1]!.app.resetAndDestroy();
    for (const s of sources.splice(0)) s.resetAndDestroy();
    log(`second: ${JSON.stringify(await tunnels[1]!.relayed)}`);
    log(`round ${round} done`);
  }

  // A new tunnel still opens and carries bytes.
  const t = await pool.connect(request(echoSrv.port));
  const { app, agent } = await front.connection();
  const relayed = t.relay(agent);
  const back = await exchange(app, 'still relaying');
  if (back.toString() !== 'still relaying') throw new Error(`echo returned ${JSON.stringify(back.toString())}`);
  await relayed;
  pool.close(true);
  await server.drain(1000);
  await until(() => relayAddon().stats().streams === 0, 10_000, 'native streams to close');
  for (const s of [sink, source, echoSrv]) s.server.close();
  front.close();
  process.stdout.write('ok\n');
  process.exit(0);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
