// Just enough of a Kubernetes client for the CNI plugin and the node agent: one kubeconfig (the one
// `weft cni-install` writes: server, CA, token file) or the pod's own service account, GETs and
// lists, and merge patches (the agent's ambient.istio.io/redirection annotation). Node built-ins
// and `yaml` only, so the plugin starts fast and its copy on the node stays small.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';

export interface KubeAccess {
  server: string;
  ca?: string;
  /** Read on every request: projected tokens are rotated on disk. */
  token: () => string | undefined;
  insecure: boolean;
}

interface Kubeconfig {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean } }[];
  users?: { name: string; user: { token?: string; tokenFile?: string } }[];
}

export function loadKubeconfig(path: string): KubeAccess {
  let kc: Kubeconfig;
  try {
    kc = parse(readFileSync(path, 'utf8')) as Kubeconfig;
  } catch (e) {
    throw new Error(`kubeconfig ${path}: ${(e as Error).message}`, { cause: e });
  }
  const ctx = kc.contexts?.find((c) => c.name === kc['current-context']) ?? kc.contexts?.[0];
  const cluster = (ctx ? kc.clusters?.find((c) => c.name === ctx.context.cluster) : kc.clusters?.[0])?.cluster;
  const user = (ctx ? kc.users?.find((u) => u.name === ctx.context.user) : kc.users?.[0])?.user;
  if (!cluster?.server) throw new Error(`kubeconfig ${path}: no cluster server`);
  const rel = (p: string) => resolve(dirname(path), p);
  const ca = cluster['certificate-authority-data']
    ? Buffer.from(cluster['certificate-authority-data'], 'base64').toString('utf8')
    : cluster['certificate-authority'] && readFileSync(rel(cluster['certificate-authority']), 'utf8');
  const tokenFile = user?.tokenFile && rel(user.tokenFile);
  return {
    server: cluster.server.replace(/\/$/, ''),
    ca: ca || undefined,
    token: () => (tokenFile ? readFileSync(tokenFile, 'utf8').trim() : user?.token),
    insecure: cluster['insecure-skip-tls-verify'] === true,
  };
}

/** The pod's own service account (token, ca.crt) and KUBERNETES_SERVICE_HOST/PORT. */
export function inClusterAccess(saDir = '/var/run/secrets/kubernetes.io/serviceaccount', env: NodeJS.ProcessEnv = process.env): KubeAccess {
  const host = env.KUBERNETES_SERVICE_HOST;
  if (!host) throw new Error('in-cluster Kubernetes access: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)');
  let ca: string;
  try {
    ca = readFileSync(`${saDir}/ca.crt`, 'utf8');
  } catch (e) {
    throw new Error(`in-cluster Kubernetes access: ${(e as Error).message}`, { cause: e });
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`,
    ca,
    token: () => readFileSync(`${saDir}/token`, 'utf8').trim(),
    insecure: false,
  };
}

export class KubeError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** GET a path of the API; undefined on 404. */
export const kubeGet = <T>(k: KubeAccess, path: string, timeoutMs = 10_000): Promise<T | undefined> => kubeRequest<T>(k, 'GET', path, { timeoutMs });

/** A JSON merge patch (RFC 7386); undefined on 404. */
export const kubeMergePatch = <T>(k: KubeAccess, path: string, patch: unknown, timeoutMs = 10_000): Promise<T | undefined> =>
  kubeRequest<T>(k, 'PATCH', path, { body: patch, contentType: 'application/merge-patch+json', timeoutMs });

/** One request; the parsed answer, undefined on 404, a KubeError for any other failure status. */
export function kubeRequest<T>(k: KubeAccess, method: 'GET' | 'PATCH', path: string, o: { body?: unknown; contentType?: string; timeoutMs?: number } = {}): Promise<T | undefined> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const url = new URL(k.server + path);
  const token = k.token();
  const data = o.body === undefined ? undefined : JSON.stringify(o.body);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolvePromise, reject) => {
    const req = request(
      url,
      {
        method,
        timeout: timeoutMs,
        headers: {
          accept: 'application/json',
          ...(token && { authorization: `Bearer ${token}` }),
          ...(data !== undefined && { 'content-type': o.contentType ?? 'application/json', 'content-length': Buffer.byteLength(data) }),
        },
        ...(url.protocol === 'https:' && { ca: k.ca, rejectUnauthorized: !k.insecure }),
      },
      (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (s += d));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status === 404) return resolvePromise(undefined);
          if (status < 200 || status > 299) {
            let msg = s.slice(0, 200);
            try {
              msg = (JSON.parse(s) as { message?: string }).message ?? msg;
            } catch {}
            return reject(new KubeError(status, `${method} ${path}: HTTP ${status}: ${msg}`));
          }
          try {
            resolvePromise(JSON.parse(s) as T);
          } catch (e) {
            reject(new Error(`${method} ${path}: invalid JSON: ${(e as Error).message}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from ${k.server} within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end(data);
  });
}

export interface PodMeta {
  metadata: { name: string; namespace: string; uid: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec?: { serviceAccountName?: string; hostNetwork?: boolean; nodeName?: string };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}
export interface NamespaceMeta {
  metadata: { name: string; labels?: Record<string, string> };
}

export const podPath = (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`;
export const namespacePath = (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}`;
