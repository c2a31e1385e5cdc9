// The outbound path through a waypoint, end to end in one process: the agent's own outbound code
// (proxyOutbound: the plan, certificates from a real CA through the CertManager, a real HbonePool,
// dial sockets made by the native addon) against a real HBONE server standing in for the waypoint.
// What the waypoint must see: the ORIGINAL destination as :authority (never its own address), the
// client's identity, and a client that insists on the waypoint's identity. A waypoint that cannot be
// resolved refuses the connection: nothing reaches any server. Only the capture is left out (it needs
// a pod netns): the test hands proxyOutbound the original destination the capture would have found.
import { closeSync, openSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayAddress, Service, Workload } from '../../../../src/api/mesh.ts';
import { CertManager } from '../../../../src/identity/index.ts';
import { CertificateAuthority } from '../../../../src/control/ca/index.ts';
import { HbonePool, createHboneServer, type Credentials } from '../../../../src/hbone/index.ts';
import { relay } from '../../../../src/hbone/relay.ts';
import { AgentMetrics } from '../../../../src/agent/metrics/metrics.ts';
import { IstioTcpMetrics } from '../../../../src/telemetry/istio-tcp.ts';
import { engineCache, type ProxyContext } from '../../../../src/agent/proxy/context.ts';
import { LocalPods } from '../../../../src/agent/proxy/node-local/local-pods.ts';
import { proxyOutbound, type OutboundPod } from '../../../../src/agent/proxy/outbound/handle.ts';
import { podDialSockets } from '../../../../src/agent/proxy/pod-sockets.ts';
import type { ProxyPod } from '../../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../../src/agent/state/mesh-state.ts';
import { SERVER_NAME, id, startCA, tmpDir, type TestCA } from '../../../control/ca/helpers.ts';
import { exchange, frontDoor, startHbone, until, type TestServer } from '../../../hbone/harness.ts';
import { parseCidrs } from '../../../../src/util/cidrs.ts';

const dir = tmpDir();
let ca: TestCA;
let certs: CertManager;
let netnsFd: number;
let door: Awaited<ReturnType<typeof frontDoor>>;
let waypoint: TestServer; // presents shop/waypoint
let impostor: TestServer; // presents shop/impostor
const pool = new HbonePool();
const lines: Record<string, unknown>[] = [];

const key = (name: string) => `shop/${name}.shop.svc.cluster.local`;
const wl = (name: string, addresses: string[], o: { sa?: string; services?: Workload['services']; waypoint?: GatewayAddress } = {}): Workload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: o.sa ?? name,
  node: 'node-a', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services: o.services ?? {}, authorizationPolicies: [],
  status: 'HEALTHY', clusterId: 'Kubernetes', ...(o.waypoint ? { waypoint: o.waypoint } : {}),
});
const svc = (name: string, addresses: string[], ports: Service['ports'], waypoint?: GatewayAddress): Service => ({
  name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, addresses, ports, subjectAltNames: [], ...(waypoint ? { waypoint } : {}),
});
const toWaypoint: GatewayAddress = { hostname: { namespace: 'shop', hostname: 'waypoint.shop.svc.cluster.local' }, hboneMtlsPort: 15008 };

/**
 * The mesh: the waypoint is one pod at 127.0.0.1 under shop/waypoint, behind its Service, whose
 * 15008 maps to `port` (where the stand-in listens). job names it (waypoint-for workload), api's
 * Service names it (waypoint-for service); client is the source.
 */
function mesh(port: number, o: { waypointService?: boolean } = {}): MeshState {
  const wp = wl('waypoint-0', ['127.0.0.1'], { sa: 'waypoint', services: { [key('waypoint')]: [{ servicePort: 15008, targetPort: port }] } });
  const job = wl('job', ['10.244.2.70'], { waypoint: toWaypoint });
  const api = wl('api', ['10.244.2.60'], { services: { [key('api')]: [{ servicePort: 80, targetPort: 8080 }] } });
  const client = wl('client', ['10.244.1.5']);
  return MeshState.empty().with({
    workloads: [wp, job, api, client].map((w) => [w.uid, w] as [string, Workload]),
    services: [
      ...(o.waypointService === false ? [] : [svc('waypoint', ['10.96.0.50'], [{ servicePort: 15008, targetPort: port }])]),
      svc('api', ['10.96.0.60'], [{ servicePort: 80, targetPort: 8080 }], toWaypoint),
    ].map((s) => [`shop/${s.hostname}`, s] as [string, Service]),
  });
}

function context(state: MeshState, localPods: LocalPods): ProxyContext {
  const metrics = new AgentMetrics('iptables');
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => state, synced: () => true, engine: engineCache('istio-system'), certs, pool, relay,
    serveHbone: (opts) => createHboneServer(opts), localPods,
  };
}

let clientPod: OutboundPod;

beforeAll(async () => {
  ca = await startCA(await CertificateAuthority.create(), dir);
  for (const sa of ['client', 'waypoint', 'impostor']) ca.scheduled.add(`node-a|spiffe://cluster.local/ns/shop/sa/${sa}`);
  certs = new CertManager({ address: ca.address, rootPem: ca.ca.rootPem, serverName: SERVER_NAME, nodeToken: 'tok-a', ttlSeconds: 3600 });
  const creds = async (sa: string): Promise<Credentials> => {
    const c = await certs.get(id('shop', sa));
    return { key: c.keyPem, certChain: c.certChainPem, root: c.rootPem };
  };
  const [w, i] = [await creds('waypoint'), await creds('impostor')];
  waypoint = await startHbone(() => w);
  impostor = await startHbone(() => i);
  // The stand-ins echo the tunnel: the bytes prove the relay, the request proves what was asked.
  for (const s of [waypoint, impostor]) s.decide = async () => ({ status: 200, acceptStream: (d) => d.pipe(d) });
  netnsFd = openSync('/proc/self/ns/net', 'r'); // the test's own netns stands in for the pod's
  clientPod = { uid: 'client-uid', namespace: 'shop', name: 'client', serviceAccount: 'client', ips: ['10.244.1.5'], netnsFd, sockets: podDialSockets(netnsFd) };
  door = await frontDoor();
}, 60_000);

afterAll(async () => {
  door?.close();
  pool.close(true);
  for (const s of [waypoint, impostor]) s?.hbone.close();
  certs?.close();
  (clientPod?.sockets as { close?: () => void } | undefined)?.close?.();
  if (netnsFd !== undefined) closeSync(netnsFd);
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** One app connection to `orig` through proxyOutbound; what the app read back (or the error that ended it). */
async function connect(ctx: ProxyContext, orig: { address: string; port: number }, payload = 'hello waypoint'): Promise<string> {
  const { app, agent } = await door.connection();
  const done = proxyOutbound(ctx, clientPod, agent as Socket, orig);
  try {
    return (await exchange(app, payload)).toString();
  } catch (e) {
    return `error: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  } finally {
    await done;
  }
}

const accessLog = () => lines.filter((l) => l.msg !== undefined && 'dst.addr' in l).at(-1)!;

describe('outbound through a waypoint, real HBONE', () => {
  it('pod IP of a workload with a waypoint: CONNECT to the waypoint, :authority the pod IP, the client\'s identity', async () => {
    // The destination pod is enrolled on this node: the node-local path must not take it past the waypoint.
    const local = new LocalPods();
    local.add({ uid: 'job-uid', namespace: 'shop', name: 'job', serviceAccount: 'job', ips: ['10.244.2.70'], netnsFd, sockets: clientPod.sockets } as ProxyPod);
    const before = waypoint.requests.length;
    expect(await connect(context(mesh(waypoint.port), local), { address: '10.244.2.70', port: 9000 })).toBe('hello waypoint');
    const req = waypoint.requests[before]!;
    expect(req.authority).toEqual({ address: '10.244.2.70', port: 9000 });
    expect(req.peer).toEqual(id('shop', 'client'));
    expect(String(req.headers.forwarded)).toMatch(/^for="10\.244\.1\.5:\d+"$/);
    const log = accessLog();
    expect(log).toMatchObject({ 'dst.addr': '10.244.2.70:9000', 'dst.hbone_addr': `127.0.0.1:${waypoint.port}`, 'dst.identity': 'spiffe://cluster.local/ns/shop/sa/waypoint' });
    expect(log.error).toBeUndefined();
    expect(log.node_local).toBeUndefined();
  });

  it('a Service VIP with a waypoint: :authority the VIP and service port, the service named in forwarded', async () => {
    const before = waypoint.requests.length;
    expect(await connect(context(mesh(waypoint.port), new LocalPods()), { address: '10.96.0.60', port: 80 })).toBe('hello waypoint');
    const req = waypoint.requests[before]!;
    expect(req.authority).toEqual({ address: '10.96.0.60', port: 80 });
    expect(String(req.headers.forwarded)).toMatch(/;host=api\.shop\.svc\.cluster\.local$/);
  });

  it('a server at the waypoint\'s address with another identity: the client refuses it, the app sees a reset', async () => {
    const before = impostor.requests.length;
    const got = await connect(context(mesh(impostor.port), new LocalPods()), { address: '10.244.2.70', port: 9000 });
    expect(got).toMatch(/^error: /);
    expect(impostor.requests.length).toBe(before); // no CONNECT was ever sent to it
    expect(accessLog()).toMatchObject({ 'response_flags': 'TLS_FAILURE' });
  });

  it('a waypoint the state cannot resolve: refused (a reset), never sent direct', async () => {
    const before = waypoint.requests.length + impostor.requests.length;
    const got = await connect(context(mesh(waypoint.port, { waypointService: false }), new LocalPods()), { address: '10.244.2.70', port: 9000 });
    expect(got).toMatch(/^error: /);
    await until(() => accessLog()?.error !== undefined, 2000, 'the access log line');
    expect(accessLog()).toMatchObject({ error: 'waypoint shop/waypoint.shop.svc.cluster.local:15008 is not in the mesh state', 'response_flags': 'NR' });
    expect(waypoint.requests.length + impostor.requests.length).toBe(before);
  });
});

// An address of the pod network that the state does not know is a pod this node has not heard of
// yet (new, or the control plane is away): passing it through would send a mesh pod's bytes in
// clear, so it waits a moment for the state and is then refused (drill d of test/e2e/drills.test.ts).
describe('outbound to an unknown address of the pod network', () => {
  let plain: import('node:net').Server;
  let port = 0;
  let accepted = 0;
  beforeAll(async () => {
    const net = await import('node:net');
    plain = net.createServer((s) => {
      accepted++;
      s.pipe(s);
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.2', r));
    port = (plain.address() as { port: number }).port;
  });
  afterAll(() => plain?.close());

  const late: Workload = { ...wl('late', ['127.0.0.2']), tunnelProtocol: 'NONE' }; // a pod outside the mesh
  const withPodNetwork = (ctx: ProxyContext): ProxyContext => ({ ...ctx, podNetwork: parseCidrs(['127.0.0.0/8', 'fd00:10:244::/48'], 'test') });

  it('is refused, never dialled, when the state does not learn it in time', async () => {
    const before = accepted;
    const got = await connect(withPodNetwork(context(mesh(waypoint.port), new LocalPods())), { address: '127.0.0.2', port }, 'secret');
    expect(got).toMatch(/^error: /);
    expect(accepted).toBe(before);
    await until(() => String(accessLog()?.error ?? '').includes('pod network'), 2000, 'the access log line');
    expect(accessLog()).toMatchObject({ 'dst.addr': `127.0.0.2:${port}`, 'response_flags': 'NR' });
  });

  it('goes ahead as the state says once it learns the pod during the wait', async () => {
    let state = mesh(waypoint.port);
    const ctx = withPodNetwork({ ...context(state, new LocalPods()), state: () => state });
    setTimeout(() => (state = MeshState.empty().with({ workloads: [[late.uid, late]] })), 300);
    expect(await connect(ctx, { address: '127.0.0.2', port }, 'hello late pod')).toBe('hello late pod');
  });

  it('outside the pod network (or with none configured) an unknown address is passed through as before', async () => {
    expect(await connect(context(mesh(waypoint.port), new LocalPods()), { address: '127.0.0.2', port }, 'external')).toBe('external');
    const ctx = { ...context(mesh(waypoint.port), new LocalPods()), podNetwork: parseCidrs(['10.244.0.0/16'], 'test') };
    expect(await connect(ctx, { address: '127.0.0.2', port }, 'external too')).toBe('external too');
  });

  it('names the wrong entry of a bad list', () => {
    expect(() => parseCidrs(['10.244.0.0/16', '10.0.0.0/33'], '--pod-cidrs')).toThrow('--pod-cidrs: "10.0.0.0/33" is not a CIDR');
    expect(() => parseCidrs(['pods'], '--pod-cidrs')).toThrow('"pods"');
  });
});
