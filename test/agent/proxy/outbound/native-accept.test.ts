// The outbound path on the native data path, from a connection the relay thread accepted (an fd,
// never a Node socket, as the pod manager's 15001 hands it over): HBONE gives the tunnel the fd
// itself; passthrough and refusals behave as with a Node socket (same bytes, same reset, same access
// log: the source is the client's ip:port, the flag NR). A real CA, CertManager, native HbonePool and
// pipe; Node's HBONE server stands in for the waypoint. The capture is left out (it needs a pod netns):
// the test hands proxyOutbound the original destination the capture would have found.
import { closeSync, openSync, rmSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayAddress, Service, Workload } from '../../../../src/api/mesh.ts';
import { listenerInNetns, sockName } from '../../../../src/bpf/index.ts';
import { CertificateAuthority } from '../../../../src/control/ca/index.ts';
import { HbonePool, type Credentials, type HboneTunnel } from '../../../../src/hbone/index.ts';
import { nativeSessionOpener } from '../../../../src/hbone/native/client.ts';
import { AcceptedFd, NativeListener } from '../../../../src/hbone/native/listener.ts';
import { nativeRelay } from '../../../../src/hbone/native/pipe.ts';
import { NativeHboneServer } from '../../../../src/hbone/native/server.ts';
import { CertManager } from '../../../../src/identity/index.ts';
import { AgentMetrics } from '../../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../../src/agent/proxy/context.ts';
import { LocalPods } from '../../../../src/agent/proxy/node-local/local-pods.ts';
import { proxyOutbound, type OutboundPod } from '../../../../src/agent/proxy/outbound/handle.ts';
import { podDialSockets } from '../../../../src/agent/proxy/pod-sockets.ts';
import { MeshState } from '../../../../src/agent/state/mesh-state.ts';
import { IstioTcpMetrics } from '../../../../src/telemetry/istio-tcp.ts';
import { SERVER_NAME, id, startCA, tmpDir, type TestCA } from '../../../control/ca/helpers.ts';
import { connectTo, exchange, until } from '../../../hbone/harness.ts';

const dir = tmpDir();
let ca: TestCA;
let certs: CertManager;
let netnsFd: number;
let waypoint: NativeHboneServer;
let waypointPort = 0;
let plain: net.Server;
let plainPort = 0;
let front: { fd: number; port: number; listener: NativeListener };
const accepted: ((c: AcceptedFd) => void)[] = [];
const pool = new HbonePool<HboneTunnel>({ open: nativeSessionOpener() });
/** What each tunnel's relay() was handed: a number is an fd, as the native route must give it. */
const relayed: string[] = [];
/** What each connect was handed as the app's fd up front (early attach). */
const appFds: (number | undefined)[] = [];
/** The waypoint stand-in's answer other than 200, when set. */
let waypointStatus: 401 | undefined;
const lines: Record<string, unknown>[] = [];
let clientPod: OutboundPod;

const key = (name: string) => `shop/${name}.shop.svc.cluster.local`;
const wl = (name: string, addresses: string[], o: { sa?: string; services?: Workload['services']; waypoint?: GatewayAddress } = {}): Workload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: o.sa ?? name,
  node: 'node-a', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: [],
  status: 'HEALTHY', clusterId: 'Kubernetes', ...(o.waypoint ? { waypoint: o.waypoint } : {}),
});
const toWaypoint: GatewayAddress = { hostname: { namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local' }, hboneMtlsPort: 15008 };

/** job (10.244.2.70) sits behind the waypoint (127.0.0.1, shop/waypoint); client is the source. */
function mesh(): MeshState {
  const wp = wl('waypoint-0', ['127.0.0.1'], { sa: 'waypoint', services: { [key('waypoint')]: [{ servicePort: 15008, targetPort: waypointPort }] } });
  const svc: Service = { name: 'waypoint', namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local', addresses: ['10.96.0.50'], ports: [{ servicePort: 15008, targetPort: waypointPort }], subjectAltNames: [] };
  return MeshState.empty().with({
    workloads: [wp, wl('job', ['10.244.2.70'], { waypoint: toWaypoint }), wl('client', ['10.244.1.5'])].map((w) => [w.uid, w] as [string, Workload]),
    services: [[`shop/${svc.hostname}`, svc]],
  });
}

function context(): ProxyContext {
  const metrics = new AgentMetrics('ebpf');
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  // The real pool, its tunnels' relay() watched.
  const watched = {
    connect: async (req: Parameters<typeof pool.connect>[0]) => {
      appFds.push(req.appFd);
      const t = await pool.connect(req);
      return {
        ...t,
        relay: (s: Socket | number) => {
          relayed.push(typeof s);
          return t.relay(s);
        },
      };
    },
  } as unknown as HbonePool<HboneTunnel>;
  const state = mesh();
  return {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => state, synced: () => true, engine: engineCache('istio-system'), certs, pool: watched, relay: nativeRelay, nativeAccept: true,
    serveHbone: () => {
      throw new Error('not in this test');
    },
    localPods: new LocalPods(),
  };
}

beforeAll(async () => {
  ca = await startCA(await CertificateAuthority.create(), dir);
  for (const sa of ['client', 'waypoint']) ca.scheduled.add(`node-a|spiffe://cluster.local/ns/shop/sa/${sa}`);
  certs = new CertManager({ address: ca.address, rootPem: ca.ca.rootPem, serverName: SERVER_NAME, nodeToken: 'tok-a', ttlSeconds: 3600 });
  const c = await certs.get(id('shop', 'waypoint'));
  const creds: Credentials = { key: c.keyPem, certChain: c.certChainPem, root: c.rootPem };
  // The waypoint stand-in sends every tunnel to the plain echo server, whatever its authority.
  plain = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => plain.listen(0, '127.0.0.2', r));
  plainPort = (plain.address() as net.AddressInfo).port;
  waypoint = new NativeHboneServer({ credentials: () => creds, trustDomain: 'cluster.local', onConnect: async () => waypointStatus ? { status: waypointStatus, reason: 'denied' } : { status: 200, upstream: await connectTo2(plainPort) } });
  await waypoint.listen({ port: 0, host: '127.0.0.1' });
  waypointPort = waypoint.address().port;
  netnsFd = openSync('/proc/self/ns/net', 'r'); // the test's own netns stands in for the pod's
  clientPod = { uid: 'client-uid', namespace: 'shop', name: 'client', serviceAccount: 'client', ips: ['10.244.1.5'], netnsFd, sockets: podDialSockets(netnsFd) };
  const fd = listenerInNetns(null, '127.0.0.1', 0);
  front = { fd, port: sockName(fd).port, listener: new NativeListener(fd, (a) => accepted.shift()?.(a)) };
}, 60_000);

function connectTo2(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.2', allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

afterAll(async () => {
  await front?.listener.close();
  if (front) closeSync(front.fd);
  pool.close(true);
  await waypoint?.drain(100);
  plain?.close();
  certs?.close();
  (clientPod?.sockets as { close?: () => void } | undefined)?.close?.();
  if (netnsFd !== undefined) closeSync(netnsFd);
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** One app connection, accepted natively, through proxyOutbound to `orig`: what the app read back, or how it ended. */
async function connect(orig: { address: string; port: number }, payload: string): Promise<{ got: string; port: number; agent: AcceptedFd }> {
  const agent = new Promise<AcceptedFd>((r) => accepted.push(r));
  const app = await connectTo(front.port);
  const a = await agent;
  const port = app.localPort!; // gone once the socket has closed
  expect(a).toBeInstanceOf(AcceptedFd);
  const done = proxyOutbound(context(), clientPod, a, orig);
  try {
    return { got: (await exchange(app, payload)).toString(), port, agent: a };
  } catch (e) {
    return { got: `error: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, port, agent: a };
  } finally {
    await done;
  }
}

const accessLog = () => lines.filter((l) => 'dst.addr' in l || 'error' in l).at(-1)!;

describe('outbound from a natively accepted connection', () => {
  it('HBONE: the tunnel is handed the fd itself; bytes both ways; the source is the client\'s ip:port', async () => {
    const { got, port, agent } = await connect({ address: '10.244.2.70', port: 9000 }, 'hello waypoint');
    expect(got).toBe('hello waypoint');
    expect(relayed.at(-1)).toBe('number');
    expect(agent.destroyed).toBe(true); // handed on: nothing here closes it again
    expect(appFds.at(-1)).toBe(agent.fd); // early attach: the fd went with the CONNECT
    await until(() => accessLog()?.['dst.addr'] === '10.244.2.70:9000', 2000, 'the access log line');
    expect(accessLog()).toMatchObject({ 'src.addr': `10.244.1.5:${port}`, 'dst.hbone_addr': `127.0.0.1:${waypointPort}`, bytes_sent: 14, bytes_recv: 14 });
    expect(accessLog().error).toBeUndefined();
  });

  it('HBONE refused by the server (401), the fd having gone with the CONNECT: a reset and DENY, as before', async () => {
    waypointStatus = 401;
    try {
      const before = relayed.length;
      const { got, port, agent } = await connect({ address: '10.244.2.70', port: 9000 }, 'denied');
      expect(got).toBe('error: ECONNRESET');
      expect(appFds.at(-1)).toBe(agent.fd);
      expect(relayed.length).toBe(before);
      expect(agent.destroyed).toBe(true); // reset here, once
      await until(() => accessLog()?.response_flags === 'DENY', 2000, 'the access log line');
      expect(accessLog()).toMatchObject({ 'src.addr': `10.244.1.5:${port}`, error: expect.stringMatching(/HTTP 401/), bytes_sent: 0, bytes_recv: 0 });
    } finally {
      waypointStatus = undefined;
    }
  });

  it('a connection to the agent\'s own port: a reset and NR, as before', async () => {
    const before = relayed.length;
    const { got, port } = await connect({ address: '10.244.2.70', port: 15001 }, 'loop');
    expect(got).toBe('error: ECONNRESET');
    expect(relayed.length).toBe(before);
    expect(accessLog()).toMatchObject({ 'src.addr': `10.244.1.5:${port}`, error: "connection to the agent's own port 15001 refused", response_flags: 'NR' });
  });

  it('passthrough (a destination outside the mesh): relayed from a Node socket made on the fd, every byte kept', async () => {
    const big = 'x'.repeat(300_000);
    const { got } = await connect({ address: '127.0.0.2', port: plainPort }, big);
    expect(got.length).toBe(big.length);
    expect(accessLog()).toMatchObject({ 'dst.addr': `127.0.0.2:${plainPort}`, bytes_sent: big.length, bytes_recv: big.length });
  });
});
