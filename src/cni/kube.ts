// Just enough of a Kubernetes client for the CNI plugin: one kubeconfig (the one `weft cni-install`
// writes: server, CA, token file), and GETs of a pod and a namespace. Node built-ins and `yaml`
// only, so the plugin starts fast and its copy on the node stays small.
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

export class KubeError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** GET a path of the API; undefined on 404. */
export function kubeGet<T>(k: KubeAccess, path: string, timeoutMs = 10_000): Promise<T | undefined> {
  const url = new URL(k.server + path);
  const token = k.token();
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolvePromise, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        timeout: timeoutMs,
        headers: { accept: 'application/json', ...(token && { authorization: `Bearer ${token}` }) },
        ...(url.protocol === 'https:' && { ca: k.ca, rejectUnauthorized: !k.insecure }),
      },
      (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (s += d));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status === 404) return resolvePromise(undefined);
          if (status !== 200) {
            let msg = s.slice(0, 200);
            try {
              msg = (JSON.parse(s) as { message?: string }).message ?? msg;
            } catch {}
            return reject(new KubeError(status, `GET ${path}: HTTP ${status}: ${msg}`));
          }
          try {
            resolvePromise(JSON.parse(s) as T);
          } catch (e) {
            reject(new Error(`GET ${path}: invalid JSON: ${(e as Error).message}`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer from ${k.server} within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end();
  });
}

export interface PodMeta {
  metadata: { name: string; namespace: string; uid: string; labels?: Record<string, string> };
  spec?: { serviceAccountName?: string; hostNetwork?: boolean };
}
export interface NamespaceMeta {
  metadata: { name: string; labels?: Record<string, string> };
}

export const podPath = (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`;
export const namespacePath = (ns: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}`;
