// Workload certificates on this node, one per service account (ztunnel's SecretManager); or, in
// workload mode (a waypoint, with its own token), the one certificate of its own identity.
// The first get() fetches (concurrent callers share it); afterwards a timer renews at a fraction
// of the lifetime, retrying with backoff. Callers always get the newest valid certificate, and a
// certificate already handed out stays valid until it expires, so rotation never cuts connections.
//
// With a cache directory, every certificate and key is also kept on the node (root-only files), so
// an agent restarted while the CA is away still has them; they are checked again on load (our
// key, our identity, the current root, not expired) and renewed as usual. The mesh root is read
// again for every request and every few seconds: when it changes, every certificate is renewed
// from the CA that now chains to it.
import { EventEmitter } from 'node:events';
import { createHash, createPrivateKey, createPublicKey, type X509Certificate } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { formatSpiffe, type SpiffeId } from '../api/spiffe.ts';
import { parseCerts } from '../pki/pem.ts';
import { readPrivateFile, writePrivateFile } from '../util/private-files.ts';
import { backoffDelay, type BackoffOptions } from './backoff.ts';
import { CAClient, caClientMode, type CAClientOptions } from './ca-client.ts';
import { createKeyAndCsr } from './csr.ts';
import { verifyIssued } from './verify-issued.ts';

export interface WorkloadCert {
  identity: SpiffeId;
  keyPem: string;
  /** Leaf first, then intermediates; the root is rootPem. */
  certChainPem: string;
  /** Every root the node trusts when the certificate was issued (peers may chain to any of them). */
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
  /** Keep certificates and keys here (a root-only directory), and reuse valid ones after a restart. */
  cacheDir?: string;
  /** How often a root given as a function is read again to notice a rotation. Default 10 s; 0: only per request. */
  rootCheckMs?: number;
  /**
   * Workload mode (workloadToken): the one identity the token is for, the only one get() serves.
   * The CA decides the identity from the token; asking for another would only be refused.
   */
  identity?: SpiffeId;
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
  private roots: { pem: string; certs: X509Certificate[]; bundle: string };
  private rootTimer?: NodeJS.Timeout;
  private closed = false;

  /** The identity of workload mode; undefined for a node agent's manager. */
  private readonly own?: string;

  constructor(private readonly o: CertManagerOptions) {
    super();
    const mode = caClientMode(o);
    if ((mode === 'workload') !== (o.identity !== undefined)) {
      throw new Error(mode === 'workload' ? 'certificate manager: a workloadToken needs the identity it is for' : 'certificate manager: identity is for workload mode (workloadToken) only');
    }
    if (o.identity) this.own = formatSpiffe(o.identity);
    this.roots = this.readRoots(); // a bad root fails the start, naming why
    this.client = new CAClient({ ...o, rootPem: () => this.currentRoots().pem });
    const every = o.rootCheckMs ?? 10_000;
    if (typeof o.rootPem === 'function' && every > 0) this.rootTimer = setInterval(() => this.checkRoots(), every).unref();
  }

  private readRoots(): CertManager['roots'] {
    const pem = typeof this.o.rootPem === 'function' ? this.o.rootPem() : this.o.rootPem;
    if (this.roots?.pem === pem) return this.roots;
    const certs = parseCerts(pem);
    return { pem, certs, bundle: certs.map((c) => c.toString().trim()).join('\n') + '\n' };
  }

  /** The roots now; a root that cannot be read or parsed keeps the last good one (logged). */
  private currentRoots(): CertManager['roots'] {
    try {
      this.roots = this.readRoots();
    } catch (e) {
      this.o.log?.error({ err: (e as Error).message }, 'cannot read the mesh root; keeping the previous one');
    }
    return this.roots;
  }

  /**
   * Reads the root again and renews now every certificate issued under other roots, so workloads
   * get certificates chaining to the new root (the old ones stay in use until then). Compares
   * each certificate, not the last root seen: a request may have read the new root first.
   * True if any renewal started.
   */
  checkRoots(): boolean {
    if (this.closed) return false;
    const roots = this.currentRoots();
    const stale = [...this.entries.values()].filter((e) => !e.inflight && e.cert && e.cert.rootPem !== roots.bundle);
    if (!stale.length) return false;
    this.o.log?.info({ roots: roots.certs.map((c) => c.subject), identities: stale.map((e) => e.uri) }, 'mesh root changed; renewing workload certificates');
    for (const e of stale) void this.fetch(e).catch(() => undefined);
    return true;
  }

  /**
   * The current certificate for an identity (in workload mode: its own, the default); fails
   * (closed) when none is valid and none can be had.
   */
  async get(id: SpiffeId | undefined = this.o.identity): Promise<WorkloadCert> {
    if (this.closed) throw new Error('certificate manager is closed');
    if (!id) throw new Error('certificate manager: which identity?');
    const uri = formatSpiffe(id);
    if (this.own !== undefined && uri !== this.own) throw new Error(`certificate manager holds only ${this.own} (its own credential's identity), not ${uri}`);
    let e = this.entries.get(uri);
    if (!e) {
      e = { id, uri, failures: 0 };
      this.entries.set(uri, e);
      if (!this.restore(e)) void this.fetch(e).catch(() => undefined);
    }
    if (e.cert && Date.now() < e.cert.notAfter.getTime()) return e.cert;
    if (e.inflight) return e.inflight;
    throw e.lastError ?? new Error(`no certificate for ${uri}`);
  }

  /** No pod on this node uses the identity any more: stop renewing it, and drop its key from the node. */
  forget(id: SpiffeId): void {
    const uri = formatSpiffe(id);
    clearTimeout(this.entries.get(uri)?.timer);
    this.entries.delete(uri);
    if (this.o.cacheDir) rmSync(this.cacheFile(uri), { force: true });
    this.o.log?.info({ identity: uri }, 'workload certificate forgotten: no pod on this node uses it');
  }

  /** Removes cached certificates of identities not in `keep` (after a restart: pods that left meanwhile). */
  pruneCache(keep: SpiffeId[]): void {
    if (!this.o.cacheDir) return;
    const want = new Set(keep.map((k) => this.cacheFile(formatSpiffe(k))));
    let names: string[] = [];
    try {
      names = readdirSync(this.o.cacheDir);
    } catch {}
    for (const n of names) if (n.endsWith('.json') && !want.has(join(this.o.cacheDir, n))) rmSync(join(this.o.cacheDir, n), { force: true });
  }

  private cacheFile(uri: string): string {
    return join(this.o.cacheDir!, `${createHash('sha256').update(uri).digest('hex').slice(0, 32)}.json`);
  }

  private save(cert: WorkloadCert): void {
    if (!this.o.cacheDir) return;
    const uri = formatSpiffe(cert.identity);
    try {
      writePrivateFile(this.cacheFile(uri), JSON.stringify({ identity: uri, keyPem: cert.keyPem, certChainPem: cert.certChainPem }));
    } catch (e) {
      this.o.log?.warn({ identity: uri, err: (e as Error).message }, 'cannot keep the workload certificate on the node');
    }
  }

  /** A cached certificate for the entry, if one is still good: ours, for this identity, chaining to today's root, unexpired. */
  private restore(e: Entry): boolean {
    if (!this.o.cacheDir) return false;
    const file = this.cacheFile(e.uri);
    try {
      const text = readPrivateFile(file);
      if (text === undefined) return false;
      const v = JSON.parse(text) as { identity?: unknown; keyPem?: unknown; certChainPem?: unknown };
      if (v.identity !== e.uri || typeof v.keyPem !== 'string' || typeof v.certChainPem !== 'string') throw new Error('want identity, keyPem and certChainPem for this identity');
      const roots = this.currentRoots();
      const checked = verifyIssued([v.certChainPem], e.id, createPublicKey(createPrivateKey(v.keyPem)), roots.certs);
      e.cert = { identity: e.id, keyPem: v.keyPem, ...checked, rootPem: roots.bundle };
    } catch (err) {
      this.o.log?.warn({ identity: e.uri, file, err: (err as Error).message }, 'cached workload certificate not usable; fetching a new one');
      rmSync(file, { force: true });
      return false;
    }
    // Renew when it would have been renewed had this process issued it.
    const { notBefore, notAfter } = e.cert;
    const renewAt = notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) * (this.o.renewFraction ?? 0.5);
    this.schedule(e, Math.max(renewAt - Date.now(), 0));
    this.o.log?.info({ identity: e.uri, notAfter, renewAt: e.renewAt }, 'workload certificate restored from the node');
    return true;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.rootTimer);
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
        this.save(cert);
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
    const roots = this.currentRoots();
    const chain = await this.client.createCertificate(k.csrPem, uri, this.o.ttlSeconds ?? 86_400);
    const v = verifyIssued(chain, id, k.publicKey, roots.certs);
    return { identity: id, keyPem: k.keyPem, ...v, rootPem: roots.bundle } satisfies WorkloadCert;
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
