// Workload certificates on this node, one per service account (ztunnel's SecretManager).
// The first get() fetches (concurrent callers share it); afterwards a timer renews at a fraction
// of the lifetime, retrying with backoff. Callers always get the newest valid certificate, and a
// certificate already handed out stays valid until it expires, so rotation never cuts connections.
import { EventEmitter } from 'node:events';
import type { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { formatSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import { parseCerts } from '../../control/ca/pem.ts';
import { backoffDelay, type BackoffOptions } from './backoff.ts';
import { CAClient, type CAClientOptions } from './ca-client.ts';
import { createKeyAndCsr } from './csr.ts';
import { verifyIssued } from './verify-issued.ts';

export interface WorkloadCert {
  identity: SpiffeId;
  keyPem: string;
  /** Leaf first, then intermediates; the root is rootPem. */
  certChainPem: string;
  rootPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface CertManagerOptions extends CAClientOptions {
  /** Lifetime to request; the CA may grant less. Default 24 h. */
  ttlSeconds?: number;
  /** Renew after this fraction of the remaining lifetime at issue. Default 0.5 (half-life). */
  renewFraction?: number;
  backoff?: BackoffOptions;
  log?: Logger;
}

export type CertState = 'fetching' | 'ready' | 'renewing' | 'backoff' | 'expired' | 'failed';

export interface CertSnapshot {
  identity: string;
  state: CertState;
  notBefore?: string;
  notAfter?: string;
  renewAt?: string;
  failures: number;
  lastError?: string;
}

export interface CertManagerEvents {
  issued: [SpiffeId, WorkloadCert];
  rotated: [SpiffeId, WorkloadCert];
  /** A fetch failed; a retry is scheduled. (Not 'error': nobody is obliged to listen.) */
  fetchFailed: [SpiffeId, Error];
}

const MAX_TIMER_MS = 2 ** 31 - 1;

interface Entry {
  id: SpiffeId;
  uri: string;
  cert?: WorkloadCert;
  inflight?: Promise<WorkloadCert>;
  timer?: NodeJS.Timeout;
  renewAt?: Date;
  failures: number;
  lastError?: Error;
}

export class CertManager extends EventEmitter<CertManagerEvents> {
  private readonly entries = new Map<string, Entry>();
  private readonly client: CAClient;
  private readonly roots: X509Certificate[];
  private closed = false;

  constructor(private readonly o: CertManagerOptions) {
    super();
    this.roots = parseCerts(o.rootPem);
    this.client = new CAClient(o);
  }

  /** The current certificate for an identity; fails (closed) when none is valid and none can be had. */
  async get(id: SpiffeId): Promise<WorkloadCert> {
    if (this.closed) throw new Error('certificate manager is closed');
    const uri = formatSpiffe(id);
    let e = this.entries.get(uri);
    if (!e) {
      e = { id, uri, failures: 0 };
      this.entries.set(uri, e);
      void this.fetch(e).catch(() => undefined);
    }
    if (e.cert && Date.now() < e.cert.notAfter.getTime()) return e.cert;
    if (e.inflight) return e.inflight;
    throw e.lastError ?? new Error(`no certificate for ${uri}`);
  }

  /** No pod on this node uses the identity any more: stop renewing it. */
  forget(id: SpiffeId): void {
    const uri = formatSpiffe(id);
    clearTimeout(this.entries.get(uri)?.timer);
    this.entries.delete(uri);
  }

  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) clearTimeout(e.timer);
    this.entries.clear();
    this.client.close();
  }

  snapshot(): CertSnapshot[] {
    const now = Date.now();
    return [...this.entries.values()].map((e) => ({
      identity: e.uri,
      state: stateOf(e, now),
      notBefore: e.cert?.notBefore.toISOString(),
      notAfter: e.cert?.notAfter.toISOString(),
      renewAt: e.renewAt?.toISOString(),
      failures: e.failures,
      lastError: e.lastError?.message,
    }));
  }

  private live(e: Entry): boolean {
    return !this.closed && this.entries.get(e.uri) === e;
  }

  private fetch(e: Entry): Promise<WorkloadCert> {
    clearTimeout(e.timer);
    e.renewAt = undefined;
    const p = this.request(e.id).then(
      (cert) => {
        if (!this.live(e)) return cert;
        const renewed = e.cert !== undefined;
        e.cert = cert;
        e.inflight = undefined;
        e.failures = 0;
        e.lastError = undefined;
        // From now, not notBefore: a backdated or skewed notBefore must not make renewal immediate.
        const now = Date.now();
        const delay = (cert.notAfter.getTime() - now) * (this.o.renewFraction ?? 0.5);
        this.schedule(e, Math.max(delay, 0));
        this.o.log?.info({ identity: e.uri, notAfter: cert.notAfter, renewAt: e.renewAt }, 'workload certificate issued');
        this.notify(renewed ? 'rotated' : 'issued', e.id, cert);
        return cert;
      },
      (err: Error) => {
        if (!this.live(e)) throw err;
        e.inflight = undefined;
        e.failures++;
        e.lastError = err;
        const delay = backoffDelay(e.failures, this.o.backoff);
        this.schedule(e, delay);
        this.o.log?.warn({ identity: e.uri, err: err.message, failures: e.failures, retryInMs: delay }, 'workload certificate fetch failed');
        this.notify('fetchFailed', e.id, err);
        throw err;
      },
    );
    e.inflight = p;
    return p;
  }

  private schedule(e: Entry, delayMs: number): void {
    e.renewAt = new Date(Date.now() + delayMs);
    // setTimeout fires at once beyond ~24.8 days (a 90-day certificate's half-life): wait in steps.
    const step = Math.min(delayMs, MAX_TIMER_MS);
    e.timer = setTimeout(
      () => (step < delayMs ? this.schedule(e, delayMs - step) : void this.fetch(e).catch(() => undefined)),
      step,
    );
    e.timer.unref();
  }

  private async request(id: SpiffeId) {
    const uri = formatSpiffe(id);
    const k = await createKeyAndCsr(id);
    const chain = await this.client.createCertificate(k.csrPem, uri, this.o.ttlSeconds ?? 86_400);
    const v = verifyIssued(chain, id, k.publicKey, this.roots);
    return { identity: id, keyPem: k.keyPem, ...v } satisfies WorkloadCert;
  }

  /** A throwing listener must not break the state machine or the callers waiting on it. */
  private notify<K extends keyof CertManagerEvents>(event: K, ...args: CertManagerEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: CertManagerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.o.log?.error({ err, event }, 'certificate listener threw');
    }
  }
}

function stateOf(e: Entry, now: number): CertState {
  const valid = e.cert !== undefined && now < e.cert.notAfter.getTime();
  if (e.inflight) return e.cert ? 'renewing' : 'fetching';
  if (valid) return e.failures > 0 ? 'backoff' : 'ready';
  return e.cert ? 'expired' : 'failed';
}
