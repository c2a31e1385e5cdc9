// Envoy's outlier detection for one cluster: consecutive 5xx (any 5xx, and the 503/504 the
// waypoint answers for a connect failure, a reset or a timeout) and consecutive gateway failure
// (502, 503, 504) eject a host at once; failure-percentage ejection is decided at each interval
// sweep from the interval's counts. An ejection lasts base_ejection_time x the host's back-off
// (which grows with each ejection, up to max_ejection_time, and shrinks by one for each interval
// the host stays healthy for base_ejection_time after its return); hosts return at the first sweep
// after that. max_ejection_percent is enforced as current Envoy does: an ejection must keep
// (ejected + 1) / hosts within it, unless always_eject_one_host and none is ejected, so Envoy's
// default 10% ejects nothing from a cluster of fewer than 10 hosts. Success-rate ejection is not
// implemented (compile refuses it). Sweeps run lazily, when the cluster is next used: the state
// holds no timer.
import type { OutlierConfig } from '../router/table.ts';

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  /** Requests and failures in the current interval (failure-percentage ejection). */
  total: number;
  failed: number;
  ejectedAt?: number;
  backoff: number;
  lastReturn?: number;
  ejections: number;
}

export class OutlierDetector {
  private readonly hosts = new Map<string, HostState>();
  private nextSweep: number;
  private ejectedCount = 0;

  constructor(
    private readonly now: () => number,
    private readonly random: () => number,
    intervalMs: number,
  ) {
    this.nextSweep = now() + intervalMs;
  }

  /** The hosts ejected now, among `keys` (the cluster's current endpoints); forgets hosts no longer there. */
  ejected(config: OutlierConfig, keys: readonly string[]): ReadonlySet<string> {
    if (this.hosts.size > keys.length || [...this.hosts.keys()].some((k) => !keys.includes(k))) {
      const live = new Set(keys);
      for (const k of [...this.hosts.keys()]) if (!live.has(k)) this.hosts.delete(k);
      this.ejectedCount = [...this.hosts.values()].filter((h) => h.ejectedAt !== undefined).length;
    }
    for (const k of keys) if (!this.hosts.has(k)) this.hosts.set(k, { consecutive5xx: 0, consecutiveGateway: 0, total: 0, failed: 0, backoff: 0, ejections: 0 });
    if (this.now() >= this.nextSweep) this.sweep(config);
    const out = new Set<string>();
    for (const [k, h] of this.hosts) if (h.ejectedAt !== undefined) out.add(k);
    return out;
  }

  /** The number of times a host was ejected (for tests and config dumps). */
  ejections(key: string): number {
    return this.hosts.get(key)?.ejections ?? 0;
  }

  /** One attempt's outcome: the upstream status, or the one the waypoint answered for it (0: not counted). */
  onResult(config: OutlierConfig, key: string, status: number): void {
    const h = this.hosts.get(key);
    if (!h || status === 0) return;
    h.total++;
    if (status < 500) {
      h.consecutive5xx = 0;
      h.consecutiveGateway = 0;
      return;
    }
    h.failed++;
    h.consecutive5xx++;
    if (status >= 502 && status <= 504) h.consecutiveGateway++;
    else h.consecutiveGateway = 0;
    if (h.ejectedAt !== undefined) return;
    if (config.consecutive5xx > 0 && h.consecutive5xx >= config.consecutive5xx && this.enforce(config.enforcingConsecutive5xx)) this.eject(config, h);
    else if (config.consecutiveGatewayFailure > 0 && h.consecutiveGateway >= config.consecutiveGatewayFailure && this.enforce(config.enforcingConsecutiveGatewayFailure)) this.eject(config, h);
  }

  private enforce(percent: number): boolean {
    return percent >= 100 || this.random() * 100 < percent;
  }

  private eject(config: OutlierConfig, h: HostState): void {
    // The counters start over whether or not the host goes (Envoy resets them on detection).
    h.consecutive5xx = 0;
    h.consecutiveGateway = 0;
    const within = (100 * (this.ejectedCount + 1)) / this.hosts.size <= config.maxEjectionPercent;
    if (!within && !(config.alwaysEjectOneHost && this.ejectedCount === 0)) return;
    h.ejectedAt = this.now();
    if (config.baseEjectionTimeMs * h.backoff < config.maxEjectionTimeMs) h.backoff++;
    h.ejections++;
    this.ejectedCount++;
  }

  private sweep(config: OutlierConfig): void {
    const now = this.now();
    this.nextSweep = now + config.intervalMs;
    for (const h of this.hosts.values()) {
      if (h.ejectedAt === undefined) {
        if (h.lastReturn !== undefined && now - h.lastReturn >= config.baseEjectionTimeMs && h.backoff > 0) h.backoff--;
      } else if (now - h.ejectedAt >= Math.min(config.baseEjectionTimeMs * h.backoff, Math.max(config.maxEjectionTimeMs, config.baseEjectionTimeMs))) {
        h.ejectedAt = undefined;
        h.lastReturn = now;
        h.consecutive5xx = 0;
        h.consecutiveGateway = 0;
        this.ejectedCount--;
      }
    }
    if (config.enforcingFailurePercentage > 0) {
      const eligible = [...this.hosts.values()].filter((h) => h.ejectedAt === undefined && h.total >= config.failurePercentageRequestVolume && h.total > 0);
      if (eligible.length >= config.failurePercentageMinimumHosts)
        for (const h of eligible) if ((100 * h.failed) / h.total >= config.failurePercentageThreshold && this.enforce(config.enforcingFailurePercentage)) this.eject(config, h);
    }
    for (const h of this.hosts.values()) h.total = h.failed = 0;
  }
}
