// Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection (which istiod
// uses): with two or more replicas serving xDS and the CA, the writes to the Kubernetes API that
// must not run twice at once (the istio-ca-root-cert ConfigMap in every namespace, waypoint
// Deployments and Gateway status) run on the lease holder only.
//
// The holder renews every retry period; another candidate takes the lease only when the holder
// left it (holderIdentity empty: released on shutdown) or has not renewed it for its
// leaseDurationSeconds, measured on the candidate's own clock from when it last saw the lease
// change (as client-go: no trust in the other node's clock). Every write is a PUT carrying the
// resourceVersion read, so of two candidates racing for an expired lease one gets 409 and stays
// a follower. A holder that cannot renew within renewDeadlineMs stops its duties before the
// lease can expire for the others (renew deadline < lease duration), so two leaders never act
// at once as long as clocks run at the same rate.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { requestJson, type HttpError } from './config/kube-api.ts';

export interface LeaderElectionOptions {
  namespace: string;
  /** The Lease's name, e.g. weft-control-leader. */
  name: string;
  /** This candidate, unique among replicas: the pod name and a random suffix. */
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  requestTimeoutMs?: number;
  /** Called when this replica becomes the leader; `stopped` when it no longer is (or stop()). */
  onStartedLeading(): void;
  onStoppedLeading(): void;
  log: Logger;
}

interface LeaseSpec {
  holderIdentity?: string | null;
  leaseDurationSeconds?: number | null;
  acquireTime?: string | null;
  renewTime?: string | null;
  leaseTransitions?: number | null;
}

interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  spec?: LeaseSpec;
}

/** metav1.MicroTime: RFC 3339 with microseconds. */
const microTime = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElector {
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private isLeader = false;
  /** When this replica last renewed (its clock). */
  private renewedAt = 0;
  /** The lease as last seen, and when it last changed (our clock). */
  private observed?: { key: string; at: number };
  private readonly leaseMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private readonly path: string;

  constructor(
    private readonly kc: KubeConfig,
    private readonly o: LeaderElectionOptions,
  ) {
    this.leaseMs = (o.leaseDurationSeconds ?? 15) * 1000;
    this.renewDeadlineMs = o.renewDeadlineMs ?? 10_000;
    this.retryMs = o.retryPeriodMs ?? 2000;
    if (!(this.renewDeadlineMs < this.leaseMs)) throw new Error(`leader election: the renew deadline (${this.renewDeadlineMs} ms) must be shorter than the lease duration (${this.leaseMs} ms)`);
    if (!(this.retryMs < this.renewDeadlineMs)) throw new Error(`leader election: the retry period (${this.retryMs} ms) must be shorter than the renew deadline (${this.renewDeadlineMs} ms)`);
    this.path = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(o.namespace)}/leases`;
  }

  get leading(): boolean {
    return this.isLeader;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.tick();
  }

  /** Stops competing; a leader stops its duties and releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.isLeader) return;
    this.lose('shutting down');
    try {
      const lease = (await this.request('GET', `${this.path}/${encodeURIComponent(this.o.name)}`)) as Lease;
      if (lease.spec?.holderIdentity !== this.o.identity) return;
      // As client-go's ReleaseOnCancel: an empty holder and a 1 s duration; the others take it on their next try.
      await this.request('PUT', `${this.path}/${encodeURIComponent(this.o.name)}`, { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime() } });
      this.o.log.info({ lease: this.where }, 'leader lease released');
    } catch (e) {
      this.o.log.warn({ lease: this.where, err: (e as Error).message }, 'releasing the leader lease failed; the others take it when it expires');
    }
  }

  private get where(): string {
    return `${this.o.namespace}/${this.o.name}`;
  }

  private request(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<unknown> {
    return requestJson(this.kc, method, path, body, undefined, this.o.requestTimeoutMs ?? Math.min(this.retryMs * 2, 10_000));
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let ok = false;
    try {
      ok = await this.tryAcquireOrRenew();
    } catch (e) {
      this.o.log.warn({ lease: this.where, err: (e as Error).message, leader: this.isLeader }, 'leader election: the lease could not be read or written');
    }
    if (this.stopped) return;
    if (ok) {
      this.renewedAt = Date.now();
      if (!this.isLeader) {
        this.isLeader = true;
        this.o.log.info({ lease: this.where, identity: this.o.identity }, 'became the leader: running the leader-only duties');
        this.o.onStartedLeading();
      }
    } else if (this.isLeader && Date.now() - this.renewedAt >= this.renewDeadlineMs) this.lose(`lease not renewed within ${this.renewDeadlineMs} ms`);
    // Followers retry with jitter (client-go's 1.2), so candidates do not try in lockstep.
    const wait = this.isLeader ? this.retryMs : this.retryMs * (1 + Math.random() * 0.2);
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), wait);
  }

  private lose(why: string): void {
    if (!this.isLeader) return;
    this.isLeader = false;
    this.o.log.warn({ lease: this.where, why }, 'no longer the leader: stopping the leader-only duties');
    this.o.onStoppedLeading();
  }

  /** One round: true when this replica holds the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = Date.now();
    const spec = (previous?: LeaseSpec): LeaseSpec => {
      const taking = previous?.holderIdentity !== this.o.identity;
      return {
        holderIdentity: this.o.identity,
        leaseDurationSeconds: this.leaseMs / 1000,
        acquireTime: taking ? microTime(now) : (previous?.acquireTime ?? microTime(now)),
        renewTime: microTime(now),
        leaseTransitions: (previous?.leaseTransitions ?? 0) + (taking && previous ? 1 : 0), // as client-go: any change of holder, a release included
      };
    };
    let lease: Lease;
    try {
      lease = (await this.request('GET', `${this.path}/${encodeURIComponent(this.o.name)}`)) as Lease;
    } catch (e) {
      if ((e as HttpError).statusCode !== 404) throw e;
      try {
        await this.request('POST', this.path, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace }, spec: spec() });
        return true;
      } catch (err) {
        if ((err as HttpError).statusCode === 409) return false; // another candidate created it first
        throw err;
      }
    }
    const s = lease.spec ?? {};
    const holder = s.holderIdentity ?? '';
    // Expiry on our clock: from when we saw the lease change, not the holder's renewTime.
    const key = `${lease.metadata.resourceVersion ?? ''}|${holder}|${s.renewTime ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, at: now };
    const duration = typeof s.leaseDurationSeconds === 'number' && s.leaseDurationSeconds > 0 ? s.leaseDurationSeconds * 1000 : this.leaseMs;
    const held = holder !== '' && holder !== this.o.identity && now < this.observed.at + duration;
    if (held) {
      if (this.isLeader) this.lose(`the lease is held by ${holder}`);
      return false;
    }
    try {
      await this.request('PUT', `${this.path}/${encodeURIComponent(this.o.name)}`, { ...lease, apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', spec: spec(s) });
      return true;
    } catch (e) {
      if ((e as HttpError).statusCode === 409) return false; // changed since we read it: someone else wrote first
      throw e;
    }
  }
}
