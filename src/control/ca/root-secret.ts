// The self-signed root on Kubernetes, kept where istiod keeps it: the Secret istio-ca-secret (type
// istio.io/ca-root; ca-cert.pem, ca-key.pem, and cert-chain.pem and root-cert.pem left empty) in
// the control plane's namespace. Read if it is there; otherwise created once, with a create that
// fails if the Secret exists: of two replicas starting together one create wins (201), the other
// gets 409 AlreadyExists and reads the winner's root, so every replica and every restart signs with
// one root. A Secret with only half a root, or one that is unreadable, stops the start (fail
// closed): replacing it would split the mesh's trust.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { requestJson, type HttpError } from '../config/kube-api.ts';
import { CERT_FILE, KEY_FILE, type RootPair, type RootStore } from './self-signed.ts';

export const CA_SECRET = 'istio-ca-secret';
export const CA_SECRET_TYPE = 'istio.io/ca-root';

export interface RootSecretOptions {
  /** Attempts of each request that failed for a reason other than an answer about the Secret. */
  attempts?: number;
  /** Back-off between those attempts, doubling from min to max. */
  retryMs?: { min: number; max: number };
  requestTimeoutMs?: number;
}

interface Secret {
  type?: string;
  data?: Record<string, string>;
}

const statusOf = (err: unknown) => (err as HttpError).statusCode;
/** Answers about the Secret itself (or our rights to it): retrying would get the same. */
const definite = (code: number | undefined) => code !== undefined && code >= 400 && code < 500 && code !== 429;

export function secretRootStore(kc: KubeConfig, namespace: string, log: Logger, opts: RootSecretOptions = {}): RootStore {
  const name = `Secret ${namespace}/${CA_SECRET}`;
  const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/secrets`;
  const where = (key: string) => `${name} key ${key}`;

  const send = async (method: 'GET' | 'POST', p: string, body?: unknown): Promise<unknown> => {
    const { min, max } = opts.retryMs ?? { min: 500, max: 8000 };
    const attempts = opts.attempts ?? 6;
    for (let i = 1; ; i++) {
      try {
        return await requestJson(kc, method, p, body, undefined, opts.requestTimeoutMs);
      } catch (err) {
        if (definite(statusOf(err)) || i >= attempts) throw err;
        const delay = Math.min(max, min * 2 ** (i - 1));
        log.warn({ secret: name, err: (err as Error).message, retryMs: delay }, 'reading the CA root secret failed; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  };

  const explain = (what: string, err: unknown): Error => {
    const code = statusOf(err);
    const hint = code === 403 ? ` (the control plane's Role must allow ${what === 'create' ? 'create' : 'get'} on secrets in ${namespace})` : '';
    return new Error(`self-signed CA: cannot ${what} ${name}: ${(err as Error).message}${hint}`, { cause: err });
  };

  const decode = (s: Secret): RootPair => {
    const text = (key: string) => {
      const b64 = s.data?.[key];
      return b64 ? Buffer.from(b64, 'base64').toString('utf8') : undefined;
    };
    const certPem = text(CERT_FILE);
    const keyPem = text(KEY_FILE);
    if (!certPem || !keyPem) throw new Error(`self-signed CA: ${where(certPem ? KEY_FILE : CERT_FILE)} is missing or empty (${name} has only half of a root; fix or delete it)`);
    return { certPem, keyPem };
  };

  const read = async (): Promise<Secret | undefined> => {
    try {
      return (await send('GET', `${path}/${CA_SECRET}`)) as Secret;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw explain('read', err);
    }
  };

  return {
    async load() {
      const s = await read();
      if (!s) return undefined;
      const pair = decode(s);
      log.info({ secret: name }, 'mesh root loaded from its secret');
      return pair;
    },
    async create(pair) {
      const b64 = (t: string) => Buffer.from(t, 'utf8').toString('base64');
      try {
        await send('POST', path, {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: CA_SECRET, namespace, labels: { 'app.kubernetes.io/part-of': 'weft' } },
          type: CA_SECRET_TYPE,
          data: { [CERT_FILE]: b64(pair.certPem), [KEY_FILE]: b64(pair.keyPem), 'cert-chain.pem': '', 'root-cert.pem': '' },
        });
        log.info({ secret: name }, 'new self-signed mesh root kept in its secret');
        return pair;
      } catch (err) {
        if (statusOf(err) !== 409) throw explain('create', err);
      }
      // AlreadyExists: another replica created it since we looked. Its root is the mesh's.
      const s = await read();
      if (!s) throw new Error(`self-signed CA: ${name} was created by another writer and is gone again; restart to try again`);
      log.info({ secret: name }, 'mesh root created by another replica; using it');
      return decode(s);
    },
    where,
  };
}
