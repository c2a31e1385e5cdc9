// The agent's inbound HBONE handler (inbound/hbone.ts) on both data paths, with real TLS, a real
// pod dial-socket pool (this test's own netns standing in for the pod's) and the access log as the
// agent writes it. Its decision is a `dial` now (the native relay connects the socket itself), and
// the access line must read as it did when the handler dialled: the error text and the CONNECT
// flag of a refused port and of a connect the peer gave up, a policy refusal before any socket is
// taken.
import { closeSync, openSync } from 'node:fs';
import http2, { type ClientHttp2Session } from 'node:http2';
import type { Server } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Workload } from '../../../src/api/mesh.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { hboneHandlers } from '../../../src/agent/proxy/inbound/hbone.ts';
import { podDialSockets } from '../../../src/agent/proxy/pod-sockets.ts';
import type { ProxyPod } from '../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';
import { NativeHboneServer } from '../../../src/hbone/native/server.ts';
import { createHboneServer, type Credentials, type PodHboneServer } from '../../../src/hbone/index.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import { echo, startBlackhole, synSent, tcpServer, until } from '../../hbone/harness.ts';
import { createCa } from '../../hbone/pki.ts';
import { rawSession } from '../../hbone/server/either.ts';

const cart: Workload = {
  uid: 'Kubernetes//Pod/shop/cart', name: 'cart', namespace: 'shop', addresses: ['127.0.0.1'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'cart', node: 'node-a', canonicalName: 'cart', canonicalRevision: 'v1', workloadType: 'POD', workloadName: 'cart', services: {},
  authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
};

let serverCreds: Credentials;
let clientCreds: Credentials;
let upstream: Server;
let echoPort: number;
let closedPort: number;
let blackhole: Awaited<ReturnType<typeof startBlackhole>>;
let netnsFd: number;

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  ({ server: upstream, port: echoPort } = await tcpServer(echo));
  const closed = await tcpServer(() => {});
  closedPort = closed.port;
  await new Promise((r) => closed.server.close(r)); // nothing listens there
  blackhole = await startBlackhole();
  netnsFd = openSync('/proc/self/ns/net', 'r');
});
afterAll(() => {
  upstream.close();
  blackhole.close();
  closeSync(netnsFd);
});

describe.each(['node', 'native'] as const)('inbound HBONE on the %s data path', (path) => {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const metrics = new AgentMetrics('iptables');
  const state = MeshState.empty().with({ workloads: [[cart.uid, cart]] });
  const ctx = {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => state, synced: () => true, engine: engineCache('istio-system'),
  } as unknown as ProxyContext;
  let pod: ProxyPod;
  let sockets: ReturnType<typeof podDialSockets>;
  let server: PodHboneServer & { address(): { port: number } };
  let session: ClientHttp2Session;

  beforeAll(async () => {
    sockets = podDialSockets(netnsFd);
    pod = { uid: 'cart-uid', namespace: 'shop', name: 'cart', serviceAccount: 'cart', ips: ['127.0.0.1'], netnsFd, sockets, capture: undefined as never };
    const opts = { credentials: () => serverCreds, trustDomain: 'cluster.local', ...hboneHandlers(ctx, pod) };
    server = path === 'node' ? createHboneServer(opts) : new NativeHboneServer(opts);
    await server.listen({ port: 0, host: '127.0.0.1' } as never);
    session = await rawSession(server.address().port, clientCreds);
  });
  afterAll(async () => {
    session.destroy();
    await server.drain(100);
    sockets.close();
  });

  /** One CONNECT: its status, and the access line it ended with. */
  async function connect(target: string, o: { body?: string; reset?: () => boolean } = {}): Promise<{ status: number; line: Record<string, unknown> }> {
    const before = lines.length;
    const st = session.request({ ':method': 'CONNECT', ':authority': target }, { endStream: false });
    st.on('error', () => {});
    let status = 0;
    st.once('response', (h) => {
      status = Number(h[':status']);
      if (status === 200) st.end(o.body ?? '');
    });
    st.resume();
    if (o.reset) {
      await until(o.reset, 5000, 'the dial to be in flight');
      st.close(http2.constants.NGHTTP2_CANCEL);
    }
    await until(() => lines.slice(before).some((l) => 'dst.addr' in l), 5000, 'the access line');
    return { status, line: lines.slice(before).find((l) => 'dst.addr' in l)! };
  }

  it('relays a tunnel it dialled, logged as complete', async () => {
    const { status, line } = await connect(`127.0.0.1:${echoPort}`, { body: 'ping' });
    expect(status).toBe(200);
    expect(line).toMatchObject({
      msg: 'connection complete', direction: 'inbound', pod: 'shop/cart', 'dst.addr': `127.0.0.1:${echoPort}`, 'dst.workload': 'cart',
      'src.identity': 'spiffe://cluster.local/ns/shop/sa/web', protocol: 'HBONE', bytes_sent: 4, bytes_recv: 4,
    });
    expect(line.error).toBeUndefined();
  });

  it('answers 503 for a refused port, logged with the connect error and the CONNECT flag', async () => {
    const { status, line } = await connect(`127.0.0.1:${closedPort}`);
    expect(status).toBe(503);
    expect(line).toMatchObject({ msg: 'connection failed', error: `connect 127.0.0.1:${closedPort}: ECONNREFUSED`, response_flags: 'CONNECT', bytes_sent: 0, bytes_recv: 0 });
  });

  it('gives up a connect whose stream the peer resets, logged as aborted with the CONNECT flag', async () => {
    const { status, line } = await connect(`127.0.0.1:${blackhole.port}`, { reset: () => synSent(blackhole.port) === 1 });
    expect(status).toBe(0);
    expect(line).toMatchObject({ msg: 'connection failed', error: `connect 127.0.0.1:${blackhole.port}: ECONNABORTED`, response_flags: 'CONNECT' });
    await until(() => synSent(blackhole.port) === 0, 5000, 'the connect to be given up');
  });

  it('refuses a self-call before taking a socket (400, flag NR)', async () => {
    const pooled = sockets.size;
    const { status, line } = await connect('127.0.0.1:15006');
    expect(status).toBe(400);
    expect(line).toMatchObject({ error: expect.stringMatching(/self-call refused/) as unknown as string, response_flags: 'NR' });
    expect(sockets.size).toBe(pooled);
  });
});
