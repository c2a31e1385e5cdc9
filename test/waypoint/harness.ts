// A waypoint between real parts, all on 127.0.0.1: the control plane's ADS servers (the waypoint
// takes Delta ADS) configured from Kubernetes objects (Service "web" with pods web-v1 and web-v2,
// a DestinationRule with subsets), the waypoint library with its own certificate, two HTTP backends each behind a real
// HBONE server standing in for the destination agent (it relays the CONNECT to the backend), and a
// client that sends HTTP/1.1 through an HBONE CONNECT to the waypoint, as a source agent would.
// Each pod also serves gRPC (grpc-js), HTTP/2 (h2c), a TCP echo and WebSocket upgrades on its
// HTTP server, for the Service "proto" whose ports declare those protocols.
import { createHash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import type { Service, Workload } from '../../src/api/mesh.ts';
import type { KObject } from '../../src/kube/objects.ts';
import { HbonePool } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { buffersOnly } from '../../src/waypoint/buffers-only.ts';
import { MeshIndex } from '../../src/waypoint/mesh.ts';
import { Waypoint, type WaypointOptions } from '../../src/waypoint/waypoint.ts';
import { WaypointConfig } from '../../src/waypoint/xds/config.ts';
import type { FilterEnv } from '../../src/waypoint/filters/registry.ts';
import { Cleanup, controlPlane, gateway, istio, log, NS, type ControlPlane } from '../control/xds/envoy/harness.ts';
import { decode, encode, TYPE_LISTENER, TYPE_ROUTE } from '../../src/control/xds/envoy/messages.ts';
import { buildGatewayListener, buildListener } from '../../src/control/xds/envoy/listeners.ts';
import type { ListenerExtras } from '../../src/control/xds/envoy/listener-extras.ts';
import type { PortProtocol } from '../../src/control/model/networking/protocol.ts';
import { connectTo, spiffe, startHbone, tcpServer, until, type TestServer } from '../hbone/harness.ts';
import { createCa, type TestCa } from '../hbone/pki.ts';

export { Cleanup, gateway, istio, NS, until };

export const VIP = '10.96.0.20';
export const HOST = `web.${NS}.svc.cluster.local`;
export const POD_IP = { v1: '10.10.0.1', v2: '10.10.0.2' } as const;
export const TARGET_PORT = 8080;
/** The pods' other servers: gRPC, h2c, a TCP echo (target ports of the Service "proto"). */
export const GRPC_TARGET = 9090;
export const H2C_TARGET = 8082;
export const ECHO_TARGET = 7000;
export const PROTO_VIP = '10.96.0.30';
export const PROTO_HOST = `proto.${NS}.svc.cluster.local`;

/** A Service over the same pods whose ports declare their protocols the ways Istio reads them. */
export const protoService = (): KObject => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'proto', namespace: NS },
  spec: {
    selector: { app: 'web' }, clusterIP: PROTO_VIP,
    ports: [
      { name: 'http-web', port: 80, targetPort: TARGET_PORT },
      { name: 'api', appProtocol: 'grpc', port: 9090, targetPort: GRPC_TARGET },
      { name: 'http2-api', port: 8082, targetPort: H2C_TARGET },
      { name: 'tcp-echo', port: 7000, targetPort: ECHO_TARGET },
      // Undeclared protocols: HTTP is detected, anything else relayed as TCP.
      { name: 'echo', port: 7001, targetPort: ECHO_TARGET },
      { name: 'web', port: 8081, targetPort: TARGET_PORT },
    ],
  },
} as KObject);

export const protoSvc: Service = {
  name: 'proto', namespace: NS, hostname: PROTO_HOST, addresses: [PROTO_VIP], subjectAltNames: [],
  ports: [{ servicePort: 80, targetPort: TARGET_PORT }, { servicePort: 9090, targetPort: GRPC_TARGET }, { servicePort: 8082, targetPort: H2C_TARGET }, { servicePort: 7000, targetPort: ECHO_TARGET }, { servicePort: 7001, targetPort: ECHO_TARGET }, { servicePort: 8081, targetPort: TARGET_PORT }],
};

const raw = (b: Buffer) => b;
/**
 * A gRPC service of raw bytes (no proto file): Unary echoes or fails, Chat echoes every message,
 * Feed streams two messages and then fails with UNAVAILABLE (a response that began).
 */
export const ECHO_SERVICE = {
  Unary: { path: '/test.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Chat: { path: '/test.Echo/Chat', requestStream: true, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  Feed: { path: '/test.Echo/Feed', requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
} satisfies grpc.ServiceDefinition;

/** `seen` gets `<method> <message>` for each call. Unary and Feed `flaky…` fail UNAVAILABLE (trailers-only) every other time, the first included. */
async function grpcServer(cleanup: Cleanup, name: string, seen: string[]): Promise<number> {
  const server = new grpc.Server();
  let flaky = 0;
  let flakyFeed = 0;
  server.addService(ECHO_SERVICE, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const m = call.request.toString();
      seen.push(`Unary ${m}`);
      const trailer = new grpc.Metadata();
      trailer.set('x-served-by', name);
      if (m.startsWith('fail')) return cb({ code: grpc.status.PERMISSION_DENIED, details: `no: ${m}`, metadata: trailer });
      if (m.startsWith('flaky') && flaky++ % 2 === 0) return cb({ code: grpc.status.UNAVAILABLE, details: `flaky: ${m}`, metadata: trailer });
      cb(null, Buffer.from(`${name}:${m}`), trailer);
    },
    Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      seen.push('Chat');
      call.on('data', (d: Buffer) => call.write(Buffer.from(`${name}:${d.toString()}`)));
      call.on('end', () => call.end());
    },
    Feed: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const m = call.request.toString();
      seen.push(`Feed ${m}`);
      if (m.startsWith('flaky') && flakyFeed++ % 2 === 0) return void call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'not now' });
      call.write(Buffer.from(`${name}:1`));
      call.write(Buffer.from(`${name}:2`));
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'gone mid-stream' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  cleanup.add(() => server.forceShutdown());
  return port;
}

/** WebSocket's handshake answer (RFC 6455 4.2.2). */
export const wsAccept = (key: string) => createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');

/**
 * WebSocket upgrades on a pod's HTTP server, answered by hand (the waypoint relays bytes; frames
 * are the endpoints' business): /ws echoes, /ws-stall never reads, /ws-reset says "bye" and resets.
 */
function serveUpgrades(server: http.Server, upgrades: string[]): void {
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    upgrades.push(`${String(req.headers.upgrade)} ${req.url}`);
    socket.on('error', () => {});
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${wsAccept(String(req.headers['sec-websocket-key']))}\r\n\r\n`);
    if (req.url === '/ws-stall') return void socket.pause();
    if (req.url === '/ws-reset') {
      socket.write('bye');
      return void setTimeout(() => socket.resetAndDestroy(), 50);
    }
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
}

export const webService = (): KObject => ({
  apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: NS },
  spec: { selector: { app: 'web' }, clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
});

export const webPod = (version: 'v1' | 'v2'): KObject => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: `web-${version}`, namespace: NS, labels: { app: 'web', version } },
  spec: { serviceAccountName: `web-${version}`, containers: [{ name: 'app', ports: [{ name: 'http', containerPort: TARGET_PORT }] }] },
  status: { phase: 'Running', podIP: POD_IP[version], conditions: [{ type: 'Ready', status: 'True' }] },
});

export const subsets = () => istio('DestinationRule', 'web', { host: 'web', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] });

export const workload = (name: string, ip: string, sa: string, revision = 'latest'): Workload => ({
  uid: `Kubernetes//Pod/${NS}/${name}`, name, namespace: NS, addresses: [ip], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: sa, node: 'node-0', canonicalName: name.replace(/-v\d$/, ''), canonicalRevision: revision, workloadType: 'POD', workloadName: name,
  services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});

export const webSvc: Service = { name: 'web', namespace: NS, hostname: HOST, addresses: [VIP], ports: [{ servicePort: 80, targetPort: TARGET_PORT }], subjectAltNames: [] };

/** The mesh as the workload API would describe it; the client's workload is at 127.0.0.1 (its HBONE source address). */
export const meshIndex = () =>
  new MeshIndex([webSvc, protoSvc], [workload('web-v1', POD_IP.v1, 'web-v1', 'v1'), workload('web-v2', POD_IP.v2, 'web-v2', 'v2'), workload('client', '127.0.0.1', 'client')]);

export interface Backend {
  name: string;
  http: http.Server;
  hbone: TestServer;
  /** Requests the backend served, with what it saw. */
  seen: { method: string; url: string; headers: IncomingMessage['headers']; body: number }[];
  /** gRPC calls it took: `<method> <message>` (`Chat` for a stream). */
  grpcSeen: string[];
  /** Requests its h2c server took (each counted as it arrives, before any answer), with the body bytes it read. */
  h2Seen: { url: string; body: number }[];
  /** When set, every request is answered with this status (a failing pod). */
  fail?: number;
  /** Upgrade requests it took: `<upgrade> <url>`. */
  upgrades: string[];
  /** Resets every connection the pod's agent relays now (the pod restarting under the waypoint). */
  resetAll(): void;
}

/**
 * An HTTP backend answering `{"pod": name, ...}`, behind an HBONE server with the pod's certificate.
 * Some paths misbehave, each counting its own requests: `/flaky` answers 503 to every other one
 * (the first included), `/grpc-flaky` the same as a gRPC UNAVAILABLE (trailers-only),
 * `/sometimes-slow` takes 2 s every other time, `/fail/<code>` always answers that status, `/slow`
 * always takes 2 s. `/echo` answers with the request's body.
 */
async function backend(cleanup: Cleanup, ca: TestCa, name: string): Promise<Backend> {
  const seen: Backend['seen'] = [];
  const self = { fail: undefined as number | undefined };
  const every = new Map<string, number>();
  const odd = (kind: string) => {
    const n = every.get(kind) ?? 0;
    every.set(kind, n + 1);
    return n % 2 === 0;
  };
  const server = http.createServer((req, res) => {
    // `/echo` streams the request body back as it arrives.
    if (req.url?.startsWith('/echo')) return void req.pipe(res.writeHead(200, { 'content-type': 'application/octet-stream' }));
    let body = 0;
    req.on('data', (c: Buffer) => (body += c.length));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const url = req.url ?? '/';
      if (url.startsWith('/flaky') && odd('flaky')) return void res.writeHead(503, { 'content-type': 'text/plain' }).end(`${name} failed`);
      if (url.startsWith('/grpc-flaky') && odd('grpc')) return void res.writeHead(200, { 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'flaky' }).end();
      if (url.startsWith('/sometimes-slow') && odd('slow')) return void setTimeout(() => res.end('late'), 2000);
      const fail = /^\/fail\/(\d{3})/.exec(url);
      if (fail) return void res.writeHead(Number(fail[1]), { 'content-type': 'text/plain' }).end(`${name} failed`);
      if (url.startsWith('/slow')) return void setTimeout(() => res.end('late'), 2000);
      // `/status/<code>` answers that status; `/delay/<ms>` answers after that long; `fail` fails everything.
      const status = self.fail ?? Number(/^\/status\/(\d{3})/.exec(req.url ?? '')?.[1] ?? 200);
      const delay = Math.min(10_000, Number(/^\/delay\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0));
      const answer = () => {
        res.statusCode = status;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ pod: name, url: req.url, body }));
      };
      if (status !== 200 || delay) return void setTimeout(answer, delay);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ pod: name, url: req.url, body }));
    });
  });
  const upgrades: string[] = [];
  serveUpgrades(server, upgrades);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => void server.close());
  const port = (server.address() as AddressInfo).port;
  // Answers with what it saw (the request's trailers too) and sends a trailer of its own. Some
  // paths misbehave every other time (the first included), each counting its own: `/h2-flaky`
  // answers 503, `/refuse` resets the stream with REFUSED_STREAM, `/rst` with INTERNAL_ERROR (both
  // before any response), `/goaway` sends a GOAWAY that leaves the stream unprocessed, `/h2-slow` takes 2 s. `/h2-fail` always answers 503, `/h2-reset`
  // resets the stream after the response began.
  const h2Seen: Backend['h2Seen'] = [];
  const h2c = http2.createServer((req, res) => {
    const url = req.url ?? '/';
    const entry = { url, body: 0 };
    h2Seen.push(entry);
    req.on('data', (c: Buffer) => (entry.body += c.length));
    if (url.startsWith('/refuse') && odd('refuse')) return void req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    if (url.startsWith('/rst') && odd('rst')) return void req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    if (url.startsWith('/goaway') && odd('goaway')) return void req.stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, Math.max(0, req.stream.id! - 2));
    if (url.startsWith('/h2-reset')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
      return void setTimeout(() => req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 50);
    }
    const flaky = url.startsWith('/h2-flaky') && odd('h2-flaky');
    const slow = url.startsWith('/h2-slow') && odd('h2-slow');
    req.on('end', () => {
      if (flaky || url.startsWith('/h2-fail')) return void res.writeHead(503, { 'content-type': 'text/plain' }).end(`${name} failed`);
      if (slow) return void setTimeout(() => !res.stream.destroyed && res.end('late'), 2000);
      res.addTrailers({ 'x-pod': name });
      res.end(JSON.stringify({ pod: name, url: req.url, version: req.httpVersion, trailers: req.trailers }));
    });
  });
  await new Promise<void>((r) => h2c.listen(0, '127.0.0.1', r));
  cleanup.add(() => void h2c.close());
  // The echo resets the connection when it reads RESET (an endpoint failing mid-stream).
  const tcp = await tcpServer((sock) => {
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => (d.includes('RESET') ? sock.resetAndDestroy() : sock.write(d)));
    sock.on('end', () => sock.end());
  });
  cleanup.add(() => void tcp.server.close());
  const grpcSeen: string[] = [];
  const ports: Record<number, number> = { [TARGET_PORT]: port, [GRPC_TARGET]: await grpcServer(cleanup, name, grpcSeen), [H2C_TARGET]: (h2c.address() as AddressInfo).port, [ECHO_TARGET]: tcp.port };
  const relayed = new Set<Socket>();
  const creds = await ca.issue(NS, name);
  const hbone = await startHbone(() => creds);
  // The destination agent: the authority (podIP:targetPort) the waypoint names, relayed to this pod's server on that port.
  hbone.decide = async (req) => {
    const to = ports[req.authority.port];
    if (!to) return { status: 503, reason: `nothing listens on ${req.authority.port}` };
    const upstream = await connectTo(to);
    relayed.add(upstream);
    upstream.once('close', () => relayed.delete(upstream));
    return { status: 200, upstream };
  };
  cleanup.add(() => hbone.hbone.drain(100));
  return Object.assign(self, { name, http: server, hbone, seen, grpcSeen, h2Seen, upgrades, resetAll: () => relayed.forEach((u) => u.destroy(Object.assign(new Error('pod restarted'), { code: 'ECONNRESET' }))) });
}

export interface Stand {
  cp: ControlPlane;
  waypoint: Waypoint;
  config: WaypointConfig;
  registry: Registry;
  port: number;
  v1: Backend;
  v2: Backend;
  ca: TestCa;
  clientCreds: Credentials;
  waypointId: string;
  accessLog: Record<string, unknown>[];
  /** The objects the control plane serves; apply() replaces them. */
  apply(objects: KObject[]): void;
}

/** `env`: what the waypoint's filters get (e.g. the CA its JWKS fetches trust). */
export async function stand(cleanup: Cleanup, objects: KObject[], opts: Partial<WaypointOptions> = {}, env: FilterEnv = {}): Promise<Stand> {
  const ca = await createCa();
  const cp = await controlPlane(cleanup);
  cp.apply(objects);
  const v1 = await backend(cleanup, ca, 'web-v1');
  const v2 = await backend(cleanup, ca, 'web-v2');
  const waypointCreds = await ca.issue(NS, 'waypoint');
  const clientCreds = await ca.issue(NS, 'client');
  const config = new WaypointConfig(env);
  const xds = config.connect({ address: `127.0.0.1:${cp.port}`, nodeId: `waypoint~${process.pid}`, log });
  cleanup.add(() => xds.close());
  await xds.whenSynced();
  await until(() => config.table.routes.size > 0 && config.table.endpoints.size > 0, 10_000, 'routes and endpoints');
  const registry = new Registry();
  const accessLog: Record<string, unknown>[] = [];
  const sink = { info: (e: object) => accessLog.push(e as Record<string, unknown>), warn: (e: object) => accessLog.push(e as Record<string, unknown>) };
  const hbonePorts: Record<string, number> = { [POD_IP.v1]: v1.hbone.port, [POD_IP.v2]: v2.hbone.port };
  const waypoint = new Waypoint({
    credentials: () => waypointCreds,
    identity: spiffe(NS, 'waypoint'),
    trustDomain: 'cluster.local',
    config,
    mesh: meshIndex(),
    registry,
    accessLog: sink,
    // As the waypoint's own dial (dialTcp): no Nagle delay on the HBONE connections.
    dial: async (address) => (await connectTo(hbonePorts[address] ?? 1)).setNoDelay(true),
    ...opts,
  });
  await waypoint.listen({ port: 0, host: '127.0.0.1' });
  cleanup.add(async () => void (await waypoint.drain(100)));
  return {
    cp, waypoint, config, registry, port: waypoint.hbone.address().port, v1, v2, ca, clientCreds, waypointId: spiffe(NS, 'waypoint'), accessLog,
    apply: (o) => void cp.apply(o),
  };
}

export interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** The source side: a pool whose CONNECTs to the waypoint carry `authority` (the original destination). */
export function client(cleanup: Cleanup, s: Stand, authority = `${VIP}:80`) {
  const pool = new HbonePool();
  cleanup.add(() => pool.close(true));
  /** A raw tunnel: the Duplex to write anything into. */
  const tunnel = async () => {
    const t = await pool.connect({
      key: { scope: 'client', srcIdentity: spiffe(NS, 'client'), dstIdentity: s.waypointId, dstAddress: '127.0.0.1' },
      port: s.port, authority, headers: {}, credentials: s.clientCreds, dial: () => connectTo(s.port),
    });
    // node:http's corked string writes arrive corrupted through an HTTP/2 stream (see buffers-only.ts).
    return buffersOnly(t.stream);
  };
  const request = async (path: string, o: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Reply> => {
    const stream = await tunnel();
    return new Promise<Reply>((resolve, reject) => {
      const req = http.request({ createConnection: () => stream as unknown as Socket, method: o.method ?? 'GET', path, headers: { host: 'web', ...o.headers } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(o.body);
    });
  };
  const pod = async (path: string, headers?: Record<string, string>) => (JSON.parse((await request(path, { headers })).body) as { pod: string }).pod;
  return { pool, tunnel, request, pod };
}

/** The value of one series of a metric, by labels (a subset); 0 when absent. */
export async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const all = await registry.getMetricsAsJSON();
  const base = name.replace(/_(count|sum|bucket)$/, '');
  const m = all.find((x) => x.name === base) as { values: { value: number; labels: Record<string, string | number>; metricName?: string }[] } | undefined;
  if (!m) return 0;
  return m.values
    .filter((v) => (v.metricName ?? base) === name && Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want))
    .reduce((n, v) => n + v.value, 0);
}

/**
 * Serves the web:80 RouteConfiguration edited by hand: for resources the control plane would not
 * write from objects (what the waypoint must refuse).
 */
export function editRoutes(s: Stand, edit: (routes: Record<string, unknown>[]) => void): void {
  const name = `${HOST}:80`;
  const rc = decode(TYPE_ROUTE, s.cp.store.get(TYPE_ROUTE).get(name)!.body) as { virtualHosts: { routes: Record<string, unknown>[] }[] };
  edit(rc.virtualHosts[0]!.routes);
  s.cp.store.patch(TYPE_ROUTE, new Map([[name, encode('envoy.config.route.v3.RouteConfiguration', rc)]]), []);
}

/** A seeded random source (mulberry32): the same draws on every run. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An evenly spread random source (the golden-ratio sequence): any share of draws below p is close to p. */
export function evenly(): () => number {
  let x = 0;
  return () => (x = (x + 0.6180339887498949) % 1);
}

/**
 * A plain TCP port in front of the waypoint (what a source agent's capture is): each connection
 * becomes an HBONE tunnel to the waypoint for `authority`, bytes piped both ways. For clients that
 * only dial TCP (grpc-js).
 */
export async function frontDoor(cleanup: Cleanup, s: Stand, authority: string): Promise<number> {
  const c = client(cleanup, s, authority);
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    sock.on('error', () => {});
    c.tunnel().then(
      (t: Duplex) => {
        t.on('error', () => sock.destroy());
        t.once('close', () => sock.destroy());
        sock.once('close', () => t.destroy());
        sock.pipe(t);
        t.pipe(sock);
      },
      () => sock.destroy(),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.add(() => void server.close());
  return (server.address() as AddressInfo).port;
}

/**
 * Serves a port's Listener (`host:port`) or, with `gateway`, the waypoint's own Listener
 * (`waypoint/<ns>/<gateway>`) carrying hand-built filters (what the control plane will write from
 * policies), and waits until the waypoint has taken it: a new routing table whose `expect.listener`
 * has that many filters. `protocol` must be the port's as the control plane reads it.
 */
export async function publishListener(
  s: Stand,
  at: { host: string; port: number; protocol?: PortProtocol } | { gateway: string; namespace?: string },
  extras: Partial<ListenerExtras>,
  expect: { listener: string; http?: number; network?: number },
): Promise<void> {
  const full: ListenerExtras = { httpFilters: [], networkFilters: [], ...extras };
  const [name, body] = 'gateway' in at
    ? [`waypoint/${at.namespace ?? NS}/${at.gateway}`, buildGatewayListener(at.namespace ?? NS, at.gateway, full)]
    : [`${at.host}:${at.port}`, buildListener(at.host, at.port, at.protocol ?? 'http', full)];
  const before = s.config.table;
  s.cp.store.patch(TYPE_LISTENER, new Map([[name, body]]), []);
  const has = () => {
    const f = s.config.table.filters?.get(expect.listener);
    return s.config.table !== before && (f?.http.length ?? 0) === (expect.http ?? 0) && (f?.network.length ?? 0) === (expect.network ?? 0);
  };
  await until(has, 10_000, `the waypoint to take listener ${name}`);
}
