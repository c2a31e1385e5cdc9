// Outbound decisions reused on the relay thread (native/relay/express_out.cc, outbound/grants.ts):
// once a captured connection's CONNECT is answered 200, the relay opens the next connection from the
// pod to the same original destination itself, finding it in the capture's BPF map. What must hold:
// the app's bytes and the access line read as for a decided connection; a state change ends every
// grant; a destination chosen among several endpoints is never granted; a refusal (401) resets the
// app and reads DENY; a stream the peer refuses unprocessed (REFUSED_STREAM) goes back to
// JavaScript and still reaches the destination. Real capture (cgroup hooks in a netns of this test),
// a real relay and real mutual TLS; the destination is an HTTP/2 server in the pod netns whose
// answers the test sets.
import { closeSync, openSync } from 'node:fs';
import http2 from 'node:http2';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Service, Workload } from '../../../../src/api/mesh.ts';
import { listenerInNetns, WEFT } from '../../../../src/bpf/index.ts';
import { EbpfCapture } from '../../../../src/agent/capture/ebpf.ts';
import type { PodCaptureHandle } from '../../../../src/agent/capture/backend.ts';
import { AgentMetrics } from '../../../../src/agent/metrics/metrics.ts';
import { engineCache, type ProxyContext } from '../../../../src/agent/proxy/context.ts';
import { StateGrants } from '../../../../src/agent/proxy/inbound/grants.ts';
import { OutboundGrants } from '../../../../src/agent/proxy/outbound/grants.ts';
import { handleExpressOutbound, handleOutbound } from '../../../../src/agent/proxy/outbound/handle.ts';
import { listenInPodNative, podDialSockets, type PodListener } from '../../../../src/agent/proxy/pod-sockets.ts';
import type { ProxyPod } from '../../../../src/agent/proxy/types.ts';
import { MeshState } from '../../../../src/agent/state/mesh-state.ts';
import { HbonePool, type HboneTunnel } from '../../../../src/hbone/index.ts';
import { nativeSessionOpener } from '../../../../src/hbone/native/client.ts';
import { nativeRelay } from '../../../../src/hbone/native/pipe.ts';
import { IstioTcpMetrics } from '../../../../src/telemetry/istio-tcp.ts';
import { Fixture, podClient, sh } from '../../../bpf/env.ts';
import { until } from '../../../hbone/harness.ts';
import { createCa } from '../../../hbone/pki.ts';

const SERVER = '10.77.0.1';
const SERVER2 = '10.77.0.3';
const CLIENT = '10.77.0.2';
const VIP = '10.96.0.9';

const wl = (name: string, addresses: string[], services: Workload['services'] = {}): Workload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', addresses, network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local', serviceAccount: name === 'client' ? 'client' : 'server',
  node: 'node-a', canonicalName: name, canonicalRevision: 'v1', workloadType: 'POD', workloadName: name, services, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const svcKey = 'shop/both.shop.svc.cluster.local';
const both: Service = { name: 'both', namespace: 'shop', hostname: 'both.shop.svc.cluster.local', addresses: [VIP], ports: [{ servicePort: 7000, targetPort: 7000 }], subjectAltNames: [] };
const mesh = () =>
  MeshState.empty().with({
    workloads: [wl('server', [SERVER], { [svcKey]: [{ servicePort: 7000, targetPort: 7000 }] }), wl('server2', [SERVER2], { [svcKey]: [{ servicePort: 7000, targetPort: 7000 }] }), wl('client', [CLIENT])].map(
      (w) => [w.uid, w] as [string, Workload],
    ),
    services: [[svcKey, both]],
  });

const fx = new Fixture();
const lines: Record<string, unknown>[] = [];
let pod0: { cgroupPath: string; netns: string };
let capture: EbpfCapture;
let podCapture: PodCaptureHandle;
let netnsFd: number;
let pod: ProxyPod;
let ctx: ProxyContext;
let state = mesh();
let listener: PodListener;
let h2: http2.Http2SecureServer;
/** What the destination answers next: 200 and an echo unless set; `refuse` once, unprocessed. */
let answer: 'ok' | 'deny' | 'refuse' = 'ok';
let connects = 0;
const pool = new HbonePool<HboneTunnel>({ open: nativeSessionOpener() });

beforeAll(async () => {
  const netns = fx.netns();
  const cgroupPath = fx.cgroup();
  pod0 = { cgroupPath, netns };
  for (const a of [SERVER, SERVER2, CLIENT]) sh('ip', '-n', netns, 'addr', 'add', `${a}/32`, 'dev', 'lo');
  const nsPath = `/run/netns/${netns}`;
  capture = EbpfCapture.open(fx.pinRoot());
  fx.defer(() => capture.close());
  podCapture = await capture.enroll({ uid: 'client-uid', name: 'client', namespace: 'shop', serviceAccount: 'client', ips: [CLIENT], netns: nsPath, cgroup: cgroupPath });
  fx.defer(() => void podCapture.release());
  netnsFd = openSync(nsPath, 'r');

  const ca = await createCa();
  const serverCreds = await ca.issue('shop', 'server');
  const clientCreds = await ca.issue('shop', 'client');
  // The destination: every HBONE peer of the pod dials it at <address>:15008 in the pod netns.
  h2 = http2.createSecureServer({ key: serverCreds.key, cert: serverCreds.certChain, ca: serverCreds.root, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
  h2.on('stream', (stream) => {
    connects++;
    stream.on('error', () => {}); // the refusal closes it with an error code
    const a = answer;
    if (a === 'refuse') {
      answer = 'ok';
      return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    }
    if (a === 'deny') return stream.respond({ ':status': 401 }, { endStream: true });
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  const hfd = listenerInNetns(nsPath, '0.0.0.0', WEFT.PORT_HBONE, { mark: WEFT.AGENT_MARK });
  await new Promise<void>((r) => h2.listen({ fd: hfd }, r));

  const metrics = new AgentMetrics('ebpf');
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  const cert = { keyPem: clientCreds.key, certChainPem: clientCreds.certChain, rootPem: clientCreds.root };
  ctx = {
    log, metrics, istio: new IstioTcpMetrics(metrics.registry), trustDomain: 'cluster.local', rootNamespace: 'istio-system',
    state: () => state, synced: () => true, engine: engineCache('istio-system'), certs: { get: async () => cert }, pool, relay: nativeRelay, nativeAccept: true,
    grants: new StateGrants(), outGrants: new OutboundGrants(),
    serveHbone: () => {
      throw new Error('not in this test');
    },
  } as unknown as ProxyContext;
  pod = { uid: 'client-uid', namespace: 'shop', name: 'client', serviceAccount: 'client', ips: [CLIENT], netnsFd, sockets: podDialSockets(netnsFd), capture: podCapture };
  const out = listenInPodNative(netnsFd, '127.0.0.1', WEFT.PORT_OUTBOUND, (c) => void handleOutbound(ctx, pod, c), undefined, undefined, (x) => handleExpressOutbound(ctx, pod, x));
  listener = out.server;
}, 60_000);

afterAll(async () => {
  listener?.close();
  pool.close(true);
  await new Promise<void>((r) => (h2 ? h2.close(() => r()) : r()));
  (pod?.sockets as { close?: () => void } | undefined)?.close?.();
  if (netnsFd !== undefined) closeSync(netnsFd);
  fx.cleanup();
});

const reused = async () => (await ctx.metrics.registry.getSingleMetric('weft_agent_reused_decisions_total')!.get()).values.find((v) => v.labels.direction === 'outbound')!.value;
const accessLines = () => lines.filter((l) => 'dst.addr' in l);

/** One app connection from the pod; waits for its access line. */
async function app(host: string, port = 7000) {
  const n = accessLines().length;
  const r = await podClient(pod0, host, port);
  await until(() => accessLines().length > n, 5000, 'the access line');
  return { r, line: accessLines().at(-1)! };
}

describe('outbound decisions reused on the relay thread', () => {
  it('the first connection is decided here, the next ones are opened by the relay: same bytes, same access line', async () => {
    const first = await app(SERVER);
    expect(first.r).toMatchObject({ ok: true, reply: 'ping' });
    expect(await reused()).toBe(0);
    const again = [await app(SERVER), await app(SERVER)];
    expect(await reused()).toBe(2);
    for (const a of again) {
      expect(a.r).toMatchObject({ ok: true, reply: 'ping' });
      // Only the app's port differs: what the decision found is recorded alike.
      for (const k of ['dst.addr', 'dst.hbone_addr', 'dst.workload', 'dst.identity', 'src.workload', 'src.identity', 'bytes_sent', 'bytes_recv', 'direction'])
        expect(a.line[k], k).toEqual(first.line[k]);
      expect(a.line['src.addr']).toMatch(new RegExp(`^${CLIENT.replace(/\./g, '\\.')}:\\d+$`));
      expect(a.line.error).toBeUndefined();
    }
    // Another port of the same workload is another destination: decided here first.
    await app(SERVER, 7001);
    expect(await reused()).toBe(2);
  });

  it('a new mesh state ends every grant: the next connection is decided again, then reused again', async () => {
    await app(SERVER);
    const before = await reused();
    state = mesh();
    ctx.grants!.observe(state); // what the agent does on every xDS update
    await app(SERVER);
    expect(await reused()).toBe(before);
    await app(SERVER);
    expect(await reused()).toBe(before + 1);
  });

  it('a Service balanced over two endpoints is never granted', async () => {
    const before = await reused();
    for (let i = 0; i < 3; i++) expect((await app(VIP)).r).toMatchObject({ ok: true, reply: 'ping' });
    expect(await reused()).toBe(before);
  });

  it('a reused connection the destination refuses (401): the app sees a reset, the line reads DENY', async () => {
    await app(SERVER);
    const before = await reused();
    answer = 'deny';
    try {
      const { r, line } = await app(SERVER);
      expect(r.ok).toBe(false);
      expect(await reused()).toBe(before + 1);
      expect(line).toMatchObject({ response_flags: 'DENY', bytes_sent: 0, bytes_recv: 0, error: expect.stringMatching(/HTTP 401/) });
    } finally {
      answer = 'ok';
    }
  });

  it('a reused stream refused unprocessed (REFUSED_STREAM) comes back to JavaScript and still gets through', async () => {
    await app(SERVER);
    const before = await reused();
    const seen = connects;
    answer = 'refuse';
    const { r, line } = await app(SERVER);
    expect(await reused()).toBe(before + 1); // opened by the relay
    expect(connects).toBe(seen + 2); // refused, then tried again from JavaScript
    expect(r).toMatchObject({ ok: true, reply: 'ping' });
    expect(line.error).toBeUndefined();
    expect(accessLines().filter((l) => l['src.addr'] === line['src.addr'])).toHaveLength(1); // one record for one connection
  });
});
