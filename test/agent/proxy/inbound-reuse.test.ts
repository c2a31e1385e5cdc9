// Reused inbound decisions on the native relay (src/hbone/native/server.ts, native/relay/express.cc,
// src/agent/proxy/inbound/grants.ts): after the agent allows a CONNECT and dials, the relay dials
// the same destination for the same connection by itself. What must hold: the access line and the
// metrics read as for a decided CONNECT; a state change (a new DENY policy) ends every grant, so the
// next CONNECT is refused; another destination is decided on its own; a reused dial that fails
// reads as a failed dial; the per-connection dial cap still holds; the sockets the relay holds for
// it are counted and closed with the server. Real TLS, a real relay, this test's netns as the pod's.
import { closeSync, openSync } from 'node:fs';
import http2, { type ClientHttp2Stream } from 'node:http2';
import type { Server } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuthorizationPolicy, Workload } from '../../../src/api/mesh.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { StateGrants } from '../../../src/agent/proxy/inbound/grants.ts';
import { hboneHandlers } from '../../../src/agent/proxy/inbound/hbone.ts';
import { podDialSockets } from '../../../src/agent/proxy/pod-sockets.ts';
import type { ProxyPod } from '../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';
import { HboneAdmission } from '../../../src/hbone/admission.ts';
import { relayAddon } from '../../../src/hbone/native/addon.ts';
import { NativeHboneServer } from '../../../src/hbone/native/server.ts';
import type { Credentials } from '../../../src/hbone/index.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import { echo, startBlackhole, synSent, tcpServer, until } from '../../hbone/harness.ts';
import { createCa } from '../../hbone/pki.ts';
import { rawSession } from '../../hbone/server/either.ts';

const cart: Workload = {
  uid: 'Kubernetes//Pod/shop/cart', name: 'cart', namespace: 'shop', addresses: ['127.0.0.1'], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'cart', node: 'node-a', canonicalName: 'cart', canonicalRevision: 'v1', workloadType: 'POD', workloadName: 'cart', services: {},
  authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
};
const CAP = 2;

let serverCreds: Credentials;
let clientCreds: Credentials;
let netnsFd: number;

beforeAll(async () => {
  const ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  netnsFd = openSync('/proc/self/ns/net', 'r');
});
afterAll(() => closeSync(netnsFd));

/** A pod's native HBONE server with the agent's handlers, decisions counted, its state settable. */
async function setup() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const metrics = new AgentMetrics('ebpf');
  const engines = engineCache('istio-system');
  let decided = 0;
  const grants = new StateGrants();
  const t = {
    lines, metrics, grants,
    state: MeshState.empty().with({ workloads: [[cart.uid, cart]] }),
    get decided() {
      return decided;
    },
  };
  const ctx = {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => t.state, synced: () => true, grants,
    engine: (s: MeshState) => {
      decided++;
      return engines(s);
    },
  } as unknown as ProxyContext;
  const sockets = podDialSockets(netnsFd);
  const pod: ProxyPod = { uid: 'cart-uid', namespace: 'shop', name: 'cart', serviceAccount: 'cart', ips: ['127.0.0.1'], netnsFd, sockets, capture: undefined as never };
  const server = new NativeHboneServer({
    credentials: () => serverCreds, trustDomain: 'cluster.local', admission: new HboneAdmission({ maxDialsPerSession: CAP }), ...hboneHandlers(ctx, pod),
  });
  await server.listen({ port: 0, host: '127.0.0.1' });
  const session = await rawSession(server.address().port, clientCreds);
  const streams: ClientHttp2Stream[] = [];

  /** One CONNECT: its status, and the access line it ended with (or none yet, for one left open). */
  async function connect(target: string, o: { body?: string; open?: boolean } = {}): Promise<{ status: number; line?: Record<string, unknown> }> {
    const before = lines.length;
    const st = session.request({ ':method': 'CONNECT', ':authority': target }, { endStream: false });
    streams.push(st);
    st.on('error', () => {});
    const status = await new Promise<number>((r) => {
      st.once('response', (h) => r(Number(h[':status'])));
      st.once('close', () => r(0));
    });
    if (o.open) return { status };
    if (status === 200) st.end(o.body ?? '');
    st.resume();
    await until(() => lines.slice(before).some((l) => 'dst.addr' in l), 5000, 'the access line');
    return { status, line: lines.slice(before).find((l) => 'dst.addr' in l)! };
  }

  async function close() {
    for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
    session.destroy();
    await server.drain(100);
    sockets.close();
  }
  return Object.assign(t, { connect, close, server, session });
}

describe('reused inbound decisions (native relay)', () => {
  let upstream: Server;
  let echoPort: number;
  beforeAll(async () => {
    ({ server: upstream, port: echoPort } = await tcpServer(echo));
  });
  afterAll(() => void upstream.close());

  it('dials a repeated CONNECT without deciding it again, logged and counted as the first', async () => {
    const t = await setup();
    try {
      const first = await t.connect(`127.0.0.1:${echoPort}`, { body: 'one' });
      expect(first.status).toBe(200);
      const after1 = t.decided;
      expect(after1).toBe(1);
      for (let i = 0; i < 3; i++) {
        const again = await t.connect(`127.0.0.1:${echoPort}`, { body: 'two!' });
        expect(again.status).toBe(200);
        const { duration_ms: _d, time: _t, bytes_sent: _s, bytes_recv: _r, ...same } = first.line!;
        expect(again.line).toMatchObject({ ...same, bytes_sent: 4, bytes_recv: 4 });
      }
      expect(t.decided).toBe(after1); // the relay dialled them: no decision in JavaScript
      const opened = (await t.metrics.registry.getSingleMetricAsString('istio_tcp_connections_opened_total')).match(/ (\d+)$/m)?.[1];
      expect(Number(opened)).toBe(4);
      // Its own sockets for those dials: counted (the agent's ready dial sockets include them).
      expect(relayAddon().stats().expressFds).toBeGreaterThan(0);
    } finally {
      await t.close();
    }
    await until(() => relayAddon().stats().expressFds === 0, 5000, 'the relay to close the pod\'s sockets');
  });

  it('ends every grant when the state changes: a new DENY policy refuses the next CONNECT', async () => {
    const t = await setup();
    try {
      expect((await t.connect(`127.0.0.1:${echoPort}`)).status).toBe(200);
      expect((await t.connect(`127.0.0.1:${echoPort}`)).status).toBe(200);
      expect(t.decided).toBe(1);
      const deny: AuthorizationPolicy = { name: 'deny-echo', namespace: 'shop', scope: 'WORKLOAD_SELECTOR', action: 'DENY', rules: [{ clauses: [{ matches: [{ destinationPorts: [echoPort] }] }] }] };
      t.state = t.state.with({ workloads: [[cart.uid, { ...cart, authorizationPolicies: ['shop/deny-echo'] }]], policies: [['shop/deny-echo', deny]] });
      t.grants.observe(t.state); // what the agent does on every xDS update
      const refused = await t.connect(`127.0.0.1:${echoPort}`);
      expect(refused.status).toBe(401);
      expect(refused.line).toMatchObject({ response_flags: 'DENY' });
      expect(t.decided).toBe(2);
      // A refusal is never granted: each one is decided.
      expect((await t.connect(`127.0.0.1:${echoPort}`)).status).toBe(401);
      expect(t.decided).toBe(3);
    } finally {
      await t.close();
    }
  });

  it('decides another destination on its own, and reports a reused dial that fails as a failed dial', async () => {
    const t = await setup();
    const other = await tcpServer(echo);
    try {
      expect((await t.connect(`127.0.0.1:${echoPort}`)).status).toBe(200);
      expect((await t.connect(`127.0.0.1:${other.port}`)).status).toBe(200);
      expect(t.decided).toBe(2);
      await new Promise((r) => other.server.close(r)); // nothing listens there any more
      const failed = await t.connect(`127.0.0.1:${other.port}`);
      expect(failed.status).toBe(503);
      expect(failed.line).toMatchObject({ msg: 'connection failed', error: `connect 127.0.0.1:${other.port}: ECONNREFUSED`, response_flags: 'CONNECT', bytes_sent: 0, bytes_recv: 0 });
      expect(t.decided).toBe(2);
    } finally {
      await t.close();
    }
  });

  it('keeps the per-connection dial cap: a peer cannot pile up reused dials to a destination that never answers', async () => {
    const t = await setup();
    const hole = await startBlackhole();
    try {
      // The first is decided and granted as it dials; the second is the relay's; the third is over the cap.
      for (let i = 1; i <= CAP; i++) {
        void t.connect(`127.0.0.1:${hole.port}`, { open: true });
        await until(() => synSent(hole.port) === i, 5000, `${i} dials in flight`);
      }
      expect(t.decided).toBe(1);
      const over = await t.connect(`127.0.0.1:${hole.port}`, { open: true }); // refused by the cap, before any decision
      expect(over.status).toBe(503);
      expect(synSent(hole.port)).toBe(CAP);
    } finally {
      await t.close();
      hole.close();
    }
    await until(() => synSent(hole.port) === 0, 5000, 'the dials to be given up');
  });
});
