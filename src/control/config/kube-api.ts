// The small part of the Kubernetes API the control plane reads: which resources, how to list one
// (raw JSON: the typed clients turn timestamps into Dates and differ from what watches deliver),
// and a watch that asks for bookmarks and can be shut for good.
import http from 'node:http';
import https from 'node:https';
import { KubeConfig, Watch, type KubernetesObject } from '@kubernetes/client-node';

export interface KubeResource {
  kind: string;
  apiVersion: string; // "v1" for the core group, else "group/version"
  plural: string;
  /** Only the objects matching it (a field selector), where istiod watches one object of a kind. */
  fieldSelector?: string;
}

const core = (kind: string, plural: string): KubeResource => ({ kind, apiVersion: 'v1', plural });
const group = (apiVersion: string) => (kind: string, plural: string): KubeResource => ({ kind, apiVersion, plural });
const security = group('security.istio.io/v1');
const networking = group('networking.istio.io/v1');
const gateway = group('gateway.networking.k8s.io/v1');

/** Everything the mesh model may read, as istiod watches it. */
export const KUBE_RESOURCES: readonly KubeResource[] = [
  core('Namespace', 'namespaces'),
  core('Pod', 'pods'),
  core('Service', 'services'),
  group('discovery.k8s.io/v1')('EndpointSlice', 'endpointslices'),
  core('ServiceAccount', 'serviceaccounts'),
  // The mesh configuration (model/mesh-config.ts): the ConfigMap `istio` only, as istiod reads it.
  { ...core('ConfigMap', 'configmaps'), fieldSelector: 'metadata.name=istio' },
  core('Node', 'nodes'),
  security('AuthorizationPolicy', 'authorizationpolicies'),
  security('PeerAuthentication', 'peerauthentications'),
  security('RequestAuthentication', 'requestauthentications'),
  group('telemetry.istio.io/v1')('Telemetry', 'telemetries'),
  networking('ServiceEntry', 'serviceentries'),
  networking('WorkloadEntry', 'workloadentries'),
  networking('DestinationRule', 'destinationrules'),
  networking('VirtualService', 'virtualservices'),
  gateway('Gateway', 'gateways'),
  gateway('HTTPRoute', 'httproutes'),
  gateway('GRPCRoute', 'grpcroutes'),
  group('gateway.envoyproxy.io/v1alpha1')('BackendTrafficPolicy', 'backendtrafficpolicies'),
];

const prefix = (r: KubeResource) => (r.apiVersion.includes('/') ? `/apis/${r.apiVersion}` : `/api/${r.apiVersion}`);

/** The collection across all namespaces, e.g. /apis/discovery.k8s.io/v1/endpointslices. */
export const collectionPath = (r: KubeResource) => `${prefix(r)}/${r.plural}`;

/** The collection as listed: with the resource's field selector, if it has one. */
export const listPath = (r: KubeResource) => `${collectionPath(r)}${r.fieldSelector ? `?fieldSelector=${encodeURIComponent(r.fieldSelector)}` : ''}`;

/** One object's path, e.g. /api/v1/namespaces/default/services/web: problems name it as their "file". */
export const objectPath = (r: KubeResource, o: KubernetesObject) =>
  o.metadata?.namespace ? `${prefix(r)}/namespaces/${o.metadata.namespace}/${r.plural}/${o.metadata.name}` : `${prefix(r)}/${r.plural}/${o.metadata?.name}`;

export function loadKubeConfig(o: { kubeconfig?: string; inCluster?: boolean }): KubeConfig {
  const kc = new KubeConfig();
  if (o.inCluster) kc.loadFromCluster();
  else if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
  if (!kc.getCurrentCluster()) throw new Error(`no current cluster in ${o.inCluster ? 'the in-cluster configuration' : o.kubeconfig}`);
  return kc;
}

export type HttpError = Error & { statusCode?: number };

/** GET a path as JSON with the kubeconfig's credentials; a non-200 answer rejects with its statusCode. */
export function getJson(kc: KubeConfig, path: string, signal?: AbortSignal, timeoutMs = 60_000): Promise<unknown> {
  return requestJson(kc, 'GET', path, undefined, signal, timeoutMs);
}

/**
 * A JSON request with the kubeconfig's credentials; a 2xx answer resolves with its body. PATCH
 * sends a JSON merge patch unless another content type is given.
 */
export async function requestJson(
  kc: KubeConfig,
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  path: string,
  body?: unknown,
  signal?: AbortSignal,
  timeoutMs = 60_000,
  contentType = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json',
): Promise<unknown> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('kubeconfig has no current cluster');
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts); // agent (TLS material), Authorization header
  const url = new URL(server.replace(/\/+$/, '') + path);
  const request = url.protocol === 'https:' ? https.request : http.request;
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers = { ...opts.headers, accept: 'application/json', ...(data ? { 'content-type': contentType, 'content-length': Buffer.byteLength(data) } : {}) };
    const req = request(url, { ...opts, method, signal, timeout: timeoutMs, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {}
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300 && parsed !== undefined) return resolve(parsed);
        const message = (parsed as { message?: string } | undefined)?.message ?? res.statusMessage;
        reject(Object.assign(new Error(`${method} ${path}: ${code} ${message}`), { statusCode: code }) as HttpError);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * The client's Watch with what client-go adds: bookmarks (so a reconnect resumes from a recent
 * resourceVersion instead of relisting) and a server-side timeout of 5-10 minutes (so a silently
 * dead connection is replaced). `close()` aborts open watches, including one still connecting,
 * which ListWatch.stop() cannot reach.
 */
export class ManagedWatch extends Watch {
  private open = new Set<AbortController>();
  private closed = false;

  constructor(
    kc: KubeConfig,
    /** Called when a watch is established (the server answered 200). */
    private readonly onOpen: () => void = () => {},
  ) {
    super(kc);
  }

  override async watch(
    path: string,
    params: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const self: { ctl?: AbortController; ended?: boolean } = {}; // done may run before watch() returns
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    const ctl = await super.watch(path, { ...params, allowWatchBookmarks: true, timeoutSeconds }, callback, (err) => {
      self.ended = true;
      if (self.ctl) this.open.delete(self.ctl);
      done(err);
    });
    self.ctl = ctl;
    if (this.closed) ctl.abort();
    else if (!self.ended) {
      this.open.add(ctl);
      this.onOpen();
    }
    return ctl;
  }

  close(): void {
    this.closed = true;
    for (const c of this.open) c.abort();
    this.open.clear();
  }
}
