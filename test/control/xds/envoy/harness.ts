// Conformance harness: weft's ADS servers on 127.0.0.1, gRPC echo servers standing in for pods, and
// @grpc/grpc-js-xds clients (an independent xDS implementation) each with its own bootstrap.
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { adsService } from '../../../../src/api/protos.ts';
import type { KObject, Pod, Service } from '../../../../src/kube/objects.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { DeltaAdsServer } from '../../../../src/control/xds/delta-ads.ts';
import { buildEnvoyResources, publishEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { SotwAdsServer } from '../../../../src/control/xds/envoy/sotw-ads.ts';
import { ResourceStore } from '../../../../src/control/xds/resources.ts';

// grpc-js-xds is CommonJS and registers the xds: scheme with the shared @grpc/grpc-js.
(createRequire(import.meta.url)('@grpc/grpc-js-xds') as { register(): void }).register();

export const log = pino({ level: 'silent' });

const json = { serialize: (v: unknown) => Buffer.from(JSON.stringify(v)), deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown };
const ECHO = {
  echo: { path: '/weft.test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize },
} as const;
const EchoClient = grpc.makeGenericClientConstructor(ECHO, 'Echo');

export const until = async (f: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition') => {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

export class Cleanup {
  private readonly fns: (() => void | Promise<void>)[] = [];
  add(f: () => void | Promise<void>) {
    this.fns.push(f);
  }
  async run() {
    for (const f of this.fns.splice(0).reverse()) await f();
  }
}

const bind = (s: grpc.Server) => new Promise<number>((res, rej) => s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));

export interface ControlPlane {
  port: number;
  store: ResourceStore;
  sotw: SotwAdsServer;
  delta: DeltaAdsServer;
  nacks: { typeUrl: string; reason: string }[];
  /** Rebuilds every Envoy resource from the objects, as the control plane does on a change. */
  apply(objects: KObject[]): ReturnType<typeof buildEnvoyResources>;
}

export async function controlPlane(cleanup: Cleanup): Promise<ControlPlane> {
  const store = new ResourceStore();
  const nacks: ControlPlane['nacks'] = [];
  const sotw = new SotwAdsServer(store, log, { onNack: (typeUrl, _n, reason) => nacks.push({ typeUrl, reason }) });
  const delta = new DeltaAdsServer(store, log, { onNack: (typeUrl, _n, reason) => nacks.push({ typeUrl, reason }) });
  const server = new grpc.Server();
  server.addService(adsService().service, { StreamAggregatedResources: sotw.handler(), DeltaAggregatedResources: delta.handler() });
  const port = await bind(server);
  cleanup.add(() => server.forceShutdown());
  return {
    port, store, sotw, delta, nacks,
    apply(objects) {
      const built = buildEnvoyResources(objects, DEFAULT_MESH);
      publishEnvoyResources(store, built);
      return built;
    },
  };
}

/** A DiscoveryResponse or DeltaDiscoveryResponse as the ADS client decodes it. */
export interface AdsResponse {
  versionInfo?: string;
  systemVersionInfo?: string;
  typeUrl: string;
  nonce: string;
  resources: { type_url?: string; value?: Buffer; name?: string; version?: string; resource?: { type_url: string; value: Buffer } }[];
  removedResources?: string[];
}

/** A raw ADS stream: what the test writes goes out as is; responses and the final status are kept. */
export function rawStream(cleanup: Cleanup, port: number, method: 'StreamAggregatedResources' | 'DeltaAggregatedResources') {
  const client = new (adsService())(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const call = (client as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, AdsResponse>>)[method]!();
  const got: AdsResponse[] = [];
  const status: { code?: grpc.status; details?: string } = {};
  call.on('data', (r: AdsResponse) => got.push(r));
  call.on('error', () => {});
  call.on('status', (s: grpc.StatusObject) => Object.assign(status, { code: s.code, details: s.details }));
  const close = () => {
    call.cancel();
    client.close();
  };
  cleanup.add(close);
  return { send: (m: unknown) => call.write(m), got, status, close };
}

export interface Echo {
  name: string;
  port: number;
  calls: number;
}

/** A gRPC server answering with its name; `fail(n)` may return a status code to fail call n (1-based). */
export async function echoServer(cleanup: Cleanup, name: string, fail?: (n: number) => grpc.status | undefined): Promise<Echo> {
  const e: Echo = { name, port: 0, calls: 0 };
  const server = new grpc.Server();
  server.addService(ECHO, {
    echo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const code = fail?.(++e.calls);
      if (code !== undefined) cb({ code, details: `${name} failed call ${e.calls}` });
      else cb(null, { server: name });
    },
  });
  e.port = await bind(server);
  cleanup.add(() => server.forceShutdown());
  return e;
}

export interface CallResult {
  server?: string;
  code: grpc.status;
  ms: number;
}

let nodes = 0;
/** A proxyless client of `xds:///target` with its own bootstrap (and so its own xDS client). */
export function xdsClient(cleanup: Cleanup, cp: ControlPlane, target: string) {
  const bootstrap = {
    xds_servers: [{ server_uri: `127.0.0.1:${cp.port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id: `conformance-${process.pid}-${++nodes}`, locality: {} },
  };
  const client = new EchoClient(`xds:///${target}`, grpc.credentials.createInsecure(), { 'grpc.TEST_ONLY_DO_NOT_USE_IN_PROD.xds_bootstrap_config': JSON.stringify(bootstrap) });
  cleanup.add(() => client.close());
  const call = (headers: Record<string, string> = {}, timeoutMs = 5000) =>
    new Promise<CallResult>((resolve) => {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) md.set(k, v);
      const start = Date.now();
      (client as unknown as { echo: (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { server: string }) => void) => void }).echo({}, md, { deadline: Date.now() + timeoutMs }, (err, res) =>
        resolve(err ? { code: err.code, ms: Date.now() - start } : { server: res?.server, code: grpc.status.OK, ms: Date.now() - start }),
      );
    });
  return { client, call };
}

/** Calls in sequence and counts answers by server name (failures by status name). */
export async function tally(call: () => Promise<CallResult>, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await call();
    const k = r.server ?? grpc.status[r.code] ?? String(r.code);
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

// --- Kubernetes objects -----------------------------------------------------------------------

export const NS = 'conf';

export function service(name: string, port = 50051): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec: { selector: { app: name }, clusterIP: '10.96.0.10', ports: [{ name: 'grpc', port, targetPort: 'grpc' }] } };
}

/** A ready pod on 127.0.0.1 whose named port `grpc` is the echo server's ephemeral port. */
export function pod(app: string, echo: Echo, labels: Record<string, string> = {}): Pod {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: echo.name, namespace: NS, labels: { app, ...labels } },
    spec: { containers: [{ name: 'app', ports: [{ name: 'grpc', containerPort: echo.port }] }] },
    status: { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

export const istio = (kind: string, name: string, spec: unknown): KObject => ({ apiVersion: 'networking.istio.io/v1', kind, metadata: { name, namespace: NS }, spec });
export const gateway = (kind: string, name: string, spec: unknown): KObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind, metadata: { name, namespace: NS }, spec });
export const host = (svc: string, port = 50051) => `${svc}.${NS}.svc.cluster.local:${port}`;
