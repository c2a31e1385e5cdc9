// DeltaDiscoveryRequest / DiscoveryRequest sequences against the real Delta ADS and SotW servers
// over gRPC: random and huge type URLs, nonces (also replies to the server's own), resource-name
// lists, error details, initial versions, and raw or mutated protobuf bytes. Properties: nothing
// escapes the server (no unhandled rejection or exception), each hostile stream either ends with a
// status or keeps going, a well-behaved client on the same server still gets the whole state, and
// once every client has gone no stream is left registered.
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/api/codec.ts';
import type { Workload } from '../../src/api/mesh.ts';
import { adsService } from '../../src/api/protos.ts';
import { DeltaAdsServer } from '../../src/control/xds/delta-ads.ts';
import { TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE } from '../../src/control/xds/envoy/messages.ts';
import { SotwAdsServer } from '../../src/control/xds/envoy/sotw-ads.ts';
import { ResourceStore } from '../../src/control/xds/resources.ts';
import { until } from '../hbone/harness.ts';
import { fuzz, testTimeout } from './fuzz.ts';

const log = pino({ level: 'silent' });
const TYPES = [TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_LISTENER, TYPE_CLUSTER, TYPE_ROUTE, TYPE_ENDPOINT];
const wl = (name: string, ip: string): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: [ip], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-0', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const WORKLOADS = [wl('a', '10.0.0.1'), wl('b', '10.0.0.2'), wl('c', '10.0.0.3')];
const CLUSTERS = ['outbound|80||echo.ns.svc.cluster.local', 'outbound|90||other.ns.svc.cluster.local'];
const NAMES = [...WORKLOADS.map((w) => w.uid), ...CLUSTERS, 'listener-a', 'route-a', 'cla-a'];

let server: grpc.Server;
let client: grpc.Client & Record<string, (...a: unknown[]) => grpc.ClientDuplexStream<unknown, Record<string, unknown>>>;
let delta: DeltaAdsServer;
let sotw: SotwAdsServer;
const escaped: unknown[] = [];
const onEscape = (e: unknown) => escaped.push(e);

beforeAll(async () => {
  const store = new ResourceStore();
  store.replace(TYPE_ADDRESS, new Map(WORKLOADS.map((w) => [w.uid, encodeWorkload(w)])));
  store.replace(TYPE_AUTHORIZATION, new Map());
  store.replace(TYPE_CLUSTER, new Map(CLUSTERS.map((c) => [c, Buffer.from(c)])));
  store.replace(TYPE_LISTENER, new Map([['listener-a', Buffer.from('l')]]));
  store.replace(TYPE_ROUTE, new Map([['route-a', Buffer.from('r')]]));
  store.replace(TYPE_ENDPOINT, new Map([['cla-a', Buffer.from('e')]]));
  delta = new DeltaAdsServer(store, log);
  sotw = new SotwAdsServer(store, log);
  server = new grpc.Server();
  server.addService(adsService().service, { DeltaAggregatedResources: delta.handler(), StreamAggregatedResources: sotw.handler() });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  const Client = adsService();
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 * 1024 * 1024 }) as unknown as typeof client;
  process.on('unhandledRejection', onEscape);
  process.on('uncaughtException', onEscape);
});
afterAll(() => {
  process.off('unhandledRejection', onEscape);
  process.off('uncaughtException', onEscape);
  client?.close();
  server?.forceShutdown();
});

/** '$last' stands for the nonce of the server's latest response on this stream (an ACK or NACK). */
type Msg = { raw: Buffer } | { mutated: Record<string, unknown>; at: number; byte: number; cut: boolean } | { req: Record<string, unknown> };
interface XdsInput {
  endpoint: 'delta' | 'sotw';
  msgs: Msg[];
  end: 'half-close' | 'cancel' | 'leave-open';
}

const typeUrl = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...TYPES) },
  { weight: 1, arbitrary: fc.constantFrom('', 'type.googleapis.com/', '*', 'type.googleapis.com/envoy.config.listener.v3.Listener ') },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 100_000 }).map((n) => `type.googleapis.com/${'x'.repeat(n)}`) },
);
const name = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...NAMES, '*') }, { weight: 1, arbitrary: fc.string({ maxLength: 30 }) });
const names = fc.oneof(
  { weight: 6, arbitrary: fc.array(name, { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 20_000 }).map((n) => Array.from({ length: n }, (_, i) => `name-${i}`)) },
);
const nonce = fc.oneof({ weight: 3, arbitrary: fc.constant('') }, { weight: 3, arbitrary: fc.constant('$last') }, { weight: 1, arbitrary: fc.string({ maxLength: 40 }) });
const errorDetail = fc.option(fc.record({ code: fc.integer({ min: -1, max: 20 }), message: fc.oneof(fc.constant(''), fc.string({ maxLength: 30 })) }), { freq: 4 });
const node = fc.option(fc.record({ id: fc.oneof(fc.constant('fuzz-node'), fc.string({ maxLength: 20 })), cluster: fc.string({ maxLength: 10 }) }), { freq: 5 });

const deltaReq = fc.record({
  node,
  typeUrl,
  resourceNamesSubscribe: names,
  resourceNamesUnsubscribe: fc.array(name, { maxLength: 3 }),
  initialResourceVersions: fc.dictionary(name, fc.string({ maxLength: 8 }), { maxKeys: 4 }),
  responseNonce: nonce,
  errorDetail,
});
const sotwReq = fc.record({ versionInfo: fc.string({ maxLength: 10 }), node, resourceNames: names, typeUrl, responseNonce: nonce, errorDetail });

const msgs = (req: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<Msg[]> =>
  fc.array(
    fc.oneof(
      { weight: 8, arbitrary: req.map((r): Msg => ({ req: r })) },
      { weight: 2, arbitrary: fc.record({ mutated: req, at: fc.nat(), byte: fc.nat(255), cut: fc.boolean() }).map((m): Msg => m) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a): Msg => ({ raw: Buffer.from(a) })) },
    ),
    { minLength: 1, maxLength: 6 },
  );

const xdsInput: fc.Arbitrary<XdsInput> = fc.oneof(
  fc.record({ endpoint: fc.constant<'delta'>('delta'), msgs: msgs(deltaReq), end: fc.constantFrom<XdsInput['end']>('half-close', 'cancel', 'leave-open') }),
  fc.record({ endpoint: fc.constant<'sotw'>('sotw'), msgs: msgs(sotwReq), end: fc.constantFrom<XdsInput['end']>('half-close', 'cancel', 'leave-open') }),
);

const methodOf = (e: 'delta' | 'sotw') => (e === 'delta' ? 'DeltaAggregatedResources' : 'StreamAggregatedResources');
const serializer = (e: 'delta' | 'sotw') => (adsService().service[methodOf(e)]!.requestSerialize as (o: object) => Buffer);

function encode(e: 'delta' | 'sotw', m: Msg, lastNonce: string): Buffer {
  const sub = (r: Record<string, unknown>) => ({ ...r, responseNonce: r.responseNonce === '$last' ? lastNonce : r.responseNonce });
  if ('raw' in m) return m.raw;
  const bytes = Buffer.from(serializer(e)(sub('req' in m ? m.req : m.mutated)));
  if ('req' in m || !bytes.length) return bytes;
  const at = m.at % bytes.length;
  if (m.cut) return bytes.subarray(0, at);
  bytes[at] = m.byte;
  return bytes;
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function hostile(input: XdsInput): Promise<string> {
  const call = client[methodOf(input.endpoint)]!(new grpc.Metadata());
  let lastNonce = '';
  let responses = 0;
  let status: string | undefined;
  call.on('data', (r: Record<string, unknown>) => {
    responses++;
    lastNonce = String(r.nonce ?? '');
  });
  call.on('error', () => {});
  call.on('status', (s: grpc.StatusObject) => (status = grpc.status[s.code]));
  for (const m of input.msgs) {
    if (status) break;
    call.write(encode(input.endpoint, m, lastNonce));
    await tick(5);
  }
  await tick(30);
  if (input.end === 'half-close') call.end();
  else call.cancel();
  await tick(10);
  return `${input.endpoint}:${status ?? 'open'}:${responses ? 'responded' : 'silent'}`;
}

/** A well-behaved client still gets the whole state of a type. */
function wellBehaved(e: 'delta' | 'sotw'): Promise<number> {
  const call = client[methodOf(e)]!(new grpc.Metadata());
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      reject(new Error(`well-behaved ${e} client got no response`));
    }, 10_000);
    call.on('error', () => {});
    call.once('data', (r: Record<string, unknown>) => {
      clearTimeout(timer);
      call.cancel();
      resolve((r.resources as unknown[]).length);
    });
    call.write(e === 'delta' ? { node: { id: 'good' }, typeUrl: TYPE_ADDRESS } : { node: { id: 'good' }, typeUrl: TYPE_CLUSTER });
  });
}

describe('fuzz: xDS request handling', () => {
  it(
    'ends hostile streams cleanly or keeps serving them, and keeps serving well-behaved clients',
    async () => {
      const { runs } = await fuzz('xds', xdsInput, async (input) => {
        const outcome = await hostile(input);
        if (escaped.length) throw new Error(`escaped the server: ${escaped.splice(0).map((e) => (e as Error).stack ?? String(e)).join('; ')}`);
        expect(await wellBehaved(input.endpoint)).toBe(input.endpoint === 'delta' ? WORKLOADS.length : CLUSTERS.length);
        return outcome;
      });
      expect(runs).toBeGreaterThan(0);
      await until(() => delta.connected === 0 && sotw.connected === 0, 10_000, 'every ADS stream to be released');
    },
    testTimeout('xds'),
  );
});
