// The agent dials the app at the pod's own address from inside the pod netns, and it closes first,
// so each connection leaves a TIME_WAIT there, every one to the same address and port. With the
// kernel's default tcp_tw_reuse (2: loopback only) a port the kernel picks at connect() never
// reuses those, and the pod ran out of source ports at about (port range)/60 s connections per
// second. The pod's dial sockets therefore come bound to their own port (native/net.cc
// BindDialPort), which reuses a TIME_WAIT whatever the sysctl says. This pod's port range is 16
// ports wide, so the defect shows after 16 dials; the fix has to hold for many times that, on the
// JavaScript dials and on the relay's, and a long-lived connection on a port the cursor comes back to
// must cost a retry, never a failed dial.
import { closeSync, openSync } from 'node:fs';
import http2, { type ClientHttp2Stream } from 'node:http2';
import net from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Workload } from '../../../src/api/mesh.ts';
import { listenerInNetns } from '../../../src/bpf/index.ts';
import { NetnsSocketPool } from '../../../src/bpf/netns.ts';
import { AgentMetrics } from '../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../src/agent/proxy/context.ts';
import { StateGrants } from '../../../src/agent/proxy/inbound/grants.ts';
import { hboneHandlers } from '../../../src/agent/proxy/inbound/hbone.ts';
import { dialFromPod, podDialSockets } from '../../../src/agent/proxy/pod-sockets.ts';
import type { ProxyPod } from '../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../src/agent/state/mesh-state.ts';
import { HboneAdmission } from '../../../src/hbone/admission.ts';
import { NativeHboneServer } from '../../../src/hbone/native/server.ts';
import type { Credentials } from '../../../src/hbone/index.ts';
import { IstioTcpMetrics } from '../../../src/telemetry/istio-tcp.ts';
import { Fixture, sh, uniq } from '../../bpf/env.ts';
import { createCa } from '../../hbone/pki.ts';
import { rawSession } from '../../hbone/server/either.ts';

const POD_IP = '10.231.7.2';
const APP_PORT = 8080;
const RANGE = [40000, 40015] as const;

const fx = new Fixture();
let netns: string;
let nsFd: number;
let app: net.Server | undefined;
/** Who the app saw connecting, per connection. */
const peers: string[] = [];
const inNs = (...argv: string[]) => sh('ip', 'netns', 'exec', netns, ...argv);
const timeWaits = () => inNs('ss', '-Htan', 'state', 'time-wait').split('\n').filter(Boolean).length;

beforeAll(async () => {
  netns = fx.netns(uniq('tw'));
  nsFd = openSync(`/run/netns/${netns}`, 'r');
  fx.defer(() => closeSync(nsFd));
  // The pod's address on an interface of its own (a veth whose peer stays in the netns): not loopback.
  sh('ip', '-n', netns, 'link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'pod0p');
  sh('ip', '-n', netns, 'addr', 'add', `${POD_IP}/24`, 'dev', 'pod0');
  for (const l of ['pod0', 'pod0p']) sh('ip', '-n', netns, 'link', 'set', l, 'up');
  // The kernel's defaults, said out loud: reuse for loopback only.
  inNs('sysctl', '-q', '-w', 'net.ipv4.tcp_tw_reuse=2', `net.ipv4.ip_local_port_range=${RANGE[0]} ${RANGE[1]}`);
  // The app: an echo that closes its side once the client has closed its own (so the client, the
  // agent here, holds the TIME_WAIT).
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    peers.push(s.remoteAddress ?? '');
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen({ fd: listenerInNetns(nsFd, POD_IP, APP_PORT) }, r));
  app = server;
});

afterAll(async () => {
  if (app) await new Promise((r) => app!.close(r));
  fx.cleanup();
});

/** One connection as the agent makes one: dial, a few bytes each way, close first, wait for the app's close. */
async function exchange(s: net.Socket): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.once('error', reject);
    s.once('end', () => (got === 'ping' ? resolve() : reject(new Error(`echo said '${got}'`))));
    s.end('ping');
  });
  s.destroy();
}

describe('dial sockets in a pod with the default tcp_tw_reuse', () => {
  it('the pod\'s dial sockets reuse the TIME_WAITs: ten ranges of dials, each from the pod\'s own address', async () => {
    const sockets = podDialSockets(nsFd);
    peers.length = 0;
    try {
      for (let i = 0; i < 160; i++) await exchange(await dialFromPod(sockets, { address: POD_IP, port: APP_PORT }));
    } finally {
      sockets.close();
    }
    expect(peers).toHaveLength(160);
    expect(new Set(peers)).toEqual(new Set([POD_IP]));
    expect(timeWaits()).toBeLessThanOrEqual(RANGE[1] - RANGE[0] + 1);
  }, 30_000);

  it('a long-lived connection on a port the cursor comes back to costs a retry, not a failed dial', async () => {
    const sockets = podDialSockets(nsFd);
    const held = await dialFromPod(sockets, { address: POD_IP, port: APP_PORT });
    try {
      for (let i = 0; i < 48; i++) await exchange(await dialFromPod(sockets, { address: POD_IP, port: APP_PORT }));
      expect(held.destroyed).toBe(false);
    } finally {
      held.destroy();
      sockets.close();
    }
  }, 30_000);
});

describe('the relay\'s dials in the same pod', () => {
  let serverCreds: Credentials;
  let clientCreds: Credentials;
  beforeAll(async () => {
    const ca = await createCa();
    serverCreds = await ca.issue('shop', 'cart');
    clientCreds = await ca.issue('shop', 'web');
  });

  it('dials and reused dials run through many ranges of ports, a long-lived tunnel among them', async () => {
    const cart: Workload = {
      uid: 'Kubernetes//Pod/shop/cart', name: 'cart', namespace: 'shop', addresses: [POD_IP], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
      serviceAccount: 'cart', node: 'node-a', canonicalName: 'cart', canonicalRevision: 'v1', workloadType: 'POD', workloadName: 'cart', services: {},
      authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
    };
    const lines: Record<string, unknown>[] = [];
    const metrics = new AgentMetrics('ebpf');
    const grants = new StateGrants();
    const state = MeshState.empty().with({ workloads: [[cart.uid, cart]] });
    const ctx = {
      log: pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) }),
      metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
      state: () => state, synced: () => true, grants, engine: engineCache('istio-system'),
    } as unknown as ProxyContext;
    const sockets = podDialSockets(nsFd);
    const pod: ProxyPod = { uid: 'cart-uid', namespace: 'shop', name: 'cart', serviceAccount: 'cart', ips: [POD_IP], netnsFd: nsFd, sockets, capture: undefined as never };
    const server = new NativeHboneServer({ credentials: () => serverCreds, trustDomain: 'cluster.local', admission: new HboneAdmission(), ...hboneHandlers(ctx, pod) });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const session = await rawSession(server.address().port, clientCreds);
    const open: ClientHttp2Stream[] = [];
    const connect = async (o: { hold?: boolean } = {}) => {
      const st = session.request({ ':method': 'CONNECT', ':authority': `${POD_IP}:${APP_PORT}` }, { endStream: false });
      st.on('error', () => {});
      const status = await new Promise<number>((r) => {
        st.once('response', (h) => r(Number(h[':status'])));
        st.once('close', () => r(0));
      });
      if (o.hold || status !== 200) {
        open.push(st);
        return status;
      }
      let got = '';
      st.setEncoding('utf8');
      st.on('data', (d: string) => (got += d));
      await new Promise<void>((r) => {
        st.once('close', () => r());
        st.end('ping');
      });
      expect(got).toBe('ping');
      return status;
    };
    try {
      expect(await connect()).toBe(200); // decided in JavaScript, then granted to the relay
      expect(await connect({ hold: true })).toBe(200); // stays open on its port while the cursor goes round
      const statuses: number[] = [];
      for (let i = 0; i < 96; i++) statuses.push(await connect());
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      const reused = (await metrics.registry.getSingleMetricAsString('weft_agent_reused_decisions_total')).match(/direction="inbound"} (\d+)/)?.[1];
      expect(Number(reused)).toBeGreaterThanOrEqual(90); // the relay's own dials, not JavaScript's
      expect(lines.filter((l) => l.msg === 'connection failed')).toEqual([]);
    } finally {
      for (const s of open) s.close(http2.constants.NGHTTP2_CANCEL);
      session.destroy();
      await server.drain(100);
      sockets.close();
    }
  }, 60_000);
});

// Last: the TIME_WAITs a plain socket leaves are not SO_REUSEADDR, so a bound port skips them (for
// 60 s), as it skips the ports of the app's own connections.
describe('the same pod without ports of their own', () => {
  it('runs out after one range of dials (the defect this guards)', async () => {
    const plain = new NetnsSocketPool(nsFd, { nonblock: true });
    let failed: NodeJS.ErrnoException | undefined;
    let ok = 0;
    try {
      for (let i = 0; i < 40 && !failed; i++) {
        try {
          await exchange(await dialFromPod(plain, { address: POD_IP, port: APP_PORT }));
          ok++;
        } catch (e) {
          failed = e as NodeJS.ErrnoException;
        }
      }
    } finally {
      plain.close();
    }
    expect(failed?.code).toBe('EADDRNOTAVAIL');
    expect(ok).toBeLessThanOrEqual(RANGE[1] - RANGE[0] + 1);
  });
});
