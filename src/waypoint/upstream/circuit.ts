// Envoy's circuit breakers for one cluster, as its HTTP/1.1 connection pool applies them. The
// waypoint's upstream is one HBONE stream per request carrying one HTTP/1.1 exchange, so a
// "connection" here is such a tunnel: max_connections bounds the tunnels open to the cluster at
// once; a request finding them all busy waits as pending (max_pending_requests bounds the wait
// queue), and max_requests bounds the requests in flight on tunnels. Past any bound the request
// overflows: 503 with response flag UO, Envoy's answer. (The HTTP/2 session the tunnels share is
// the HBONE pool's, not counted: Envoy's own HBONE streams are not either.)
import type { CircuitThresholds } from '../router/table.ts';

/** Envoy's thresholds when the cluster has no circuit_breakers. */
export const DEFAULT_THRESHOLDS: CircuitThresholds = { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3 };

export interface Admission {
  /** Resolves true once the request may open its tunnel, false when it overflowed. */
  ready: Promise<boolean>;
  /** The request is over (or went away while pending): frees its tunnel or its place in the queue. */
  release(): void;
}

export class CircuitBreaker {
  private connections = 0;
  private requests = 0;
  private readonly pending: { go: (ok: boolean) => void; cancelled: boolean; resolve: (ok: boolean) => void }[] = [];
  private pendingCount = 0;
  private retries = 0;

  /**
   * A retry's place under max_retries (retries in flight across the cluster, as Envoy counts
   * them): the function ending it, or undefined when the budget is spent (Envoy then answers with
   * what it has instead of retrying).
   */
  retry(t: CircuitThresholds = DEFAULT_THRESHOLDS): (() => void) | undefined {
    if (this.retries >= t.maxRetries) return undefined;
    this.retries++;
    let done = false;
    return () => {
      if (!done) this.retries--;
      done = true;
    };
  }

  /** Requests in flight and waiting, for stats and tests. */
  stats(): { connections: number; requests: number; pending: number } {
    return { connections: this.connections, requests: this.requests, pending: this.pendingCount };
  }

  admit(t: CircuitThresholds = DEFAULT_THRESHOLDS): Admission {
    let state: 'pending' | 'active' | 'done' = 'pending';
    let entry: { go: (ok: boolean) => void; cancelled: boolean; resolve: (ok: boolean) => void } | undefined;
    const attach = (): boolean => {
      if (this.requests >= t.maxRequests) return false;
      this.connections++;
      this.requests++;
      state = 'active';
      return true;
    };
    const release = () => {
      if (state === 'active') {
        this.connections--;
        this.requests--;
        this.drain(t);
      } else if (state === 'pending' && entry && !entry.cancelled) {
        entry.cancelled = true;
        this.pendingCount--;
        entry.resolve(false); // the waiter is told it will not go
      }
      state = 'done';
    };
    if (this.connections < t.maxConnections && this.pendingCount === 0) return { ready: Promise.resolve(attach() || ((state = 'done'), false)), release };
    if (this.pendingCount >= t.maxPendingRequests) {
      state = 'done';
      return { ready: Promise.resolve(false), release };
    }
    const ready = new Promise<boolean>((resolve) => {
      entry = {
        cancelled: false,
        resolve,
        go: (ok) => {
          if (!ok || !attach()) {
            state = 'done';
            return resolve(false);
          }
          resolve(true);
        },
      };
    });
    this.pending.push(entry!);
    this.pendingCount++;
    return { ready, release };
  }

  /** A tunnel was freed: the next pending request takes it. */
  private drain(t: CircuitThresholds): void {
    while (this.connections < t.maxConnections && this.pending.length) {
      const next = this.pending.shift()!;
      if (next.cancelled) continue;
      this.pendingCount--;
      next.go(true);
    }
  }
}
