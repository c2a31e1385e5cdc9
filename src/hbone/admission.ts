// Admission to the agent's HBONE listeners (15008 in every enrolled pod). Anyone who can reach a
// pod can open TCP connections to 15008 before proving an identity, so the agent bounds what a peer
// can make it hold: connections and unauthenticated handshakes, across the agent and per source
// address, and how long a handshake may take. One instance is shared by every pod's listener on
// either data path; a connection over a cap is closed at accept, before any TLS state exists.
import { HANDSHAKE_TIMEOUT_MS } from './settings.ts';

export interface HboneLimits {
  /** Open HBONE connections (handshaking or authenticated), all pods of this agent together. */
  maxConnections: number;
  /** The same, from one source IP. */
  maxConnectionsPerSource: number;
  /** Connections still in the TLS handshake (no identity proven yet), all pods together. */
  maxHandshakes: number;
  /** The same, from one source IP. */
  maxHandshakesPerSource: number;
  /** A connection that has not completed the handshake by then is closed. */
  handshakeTimeoutMs: number;
  /**
   * CONNECTs of one authenticated connection being decided and dialled at once; one more is refused
   * with 503 before anything is dialled, so a peer cannot make the agent hold dials to a destination
   * that never answers. A stream's dial ends (is aborted) when the peer resets it.
   */
  maxDialsPerSession: number;
}

/**
 * Defaults. One source (a pod, or a node's agent pooling its pods' tunnels with up to 100 streams
 * per connection) needs few connections, so per-source caps stop a single hostile pod long before
 * the agent-wide caps, leaving those for everyone else.
 */
export const DEFAULT_HBONE_LIMITS: HboneLimits = {
  maxConnections: 16_384,
  maxConnectionsPerSource: 1_024,
  maxHandshakes: 1_024,
  maxHandshakesPerSource: 64,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  // The streams an honest client multiplexes on one connection (ztunnel's pool and ours: 100), which
  // may all arrive before the first dial completes; half the server's stream cap.
  maxDialsPerSession: 100,
};

/**
 * Checks limits a user supplied; the error names the field. Caps may overlap (a per-source cap above
 * the agent's): each is checked on its own, so the tighter one wins.
 */
export function validateHboneLimits(l: HboneLimits): HboneLimits {
  for (const [k, v] of Object.entries(l)) if (!Number.isSafeInteger(v) || v < 1) throw new Error(`HBONE limit ${k}: ${v} is not a positive integer`);
  return l;
}

/** One admitted connection. Idempotent: every exit path may call release(). */
export interface AdmissionTicket {
  /** The peer proved a mesh identity: it no longer counts as a pending handshake. */
  authenticated(): void;
  release(): void;
}

interface Counts {
  connections: number;
  handshakes: number;
}

export class HboneAdmission {
  readonly limits: HboneLimits;
  private readonly total: Counts = { connections: 0, handshakes: 0 };
  private readonly bySource = new Map<string, Counts>();
  /** Refusals since start, by cap, for config_dump and tests. */
  readonly refused = { connections: 0, connectionsPerSource: 0, handshakes: 0, handshakesPerSource: 0, dialsPerSession: 0 };

  /** onRefused hears every refusal (the agent logs them throttled). */
  constructor(
    limits: Partial<HboneLimits> = {},
    private readonly onRefused?: (reason: string) => void,
  ) {
    this.limits = validateHboneLimits({ ...DEFAULT_HBONE_LIMITS, ...limits });
  }

  /** A ticket, or why the connection from `source` (an IP) is refused. */
  admit(source: string): AdmissionTicket | { refused: string } {
    const l = this.limits;
    const src = this.bySource.get(source) ?? { connections: 0, handshakes: 0 };
    if (this.total.connections >= l.maxConnections) return this.refuse('connections', `agent holds ${l.maxConnections} HBONE connections (--hbone-max-connections)`);
    if (this.total.handshakes >= l.maxHandshakes) return this.refuse('handshakes', `agent has ${l.maxHandshakes} HBONE handshakes pending (--hbone-max-handshakes)`);
    if (src.connections >= l.maxConnectionsPerSource) return this.refuse('connectionsPerSource', `${source} holds ${l.maxConnectionsPerSource} HBONE connections (--hbone-max-connections-per-source)`);
    if (src.handshakes >= l.maxHandshakesPerSource) return this.refuse('handshakesPerSource', `${source} has ${l.maxHandshakesPerSource} HBONE handshakes pending (--hbone-max-handshakes-per-source)`);
    this.bySource.set(source, src);
    src.connections++;
    src.handshakes++;
    this.total.connections++;
    this.total.handshakes++;
    let pending = true;
    let open = true;
    const endHandshake = () => {
      if (!pending) return;
      pending = false;
      src.handshakes--;
      this.total.handshakes--;
    };
    return {
      authenticated: endHandshake,
      release: () => {
        if (!open) return;
        open = false;
        endHandshake();
        src.connections--;
        this.total.connections--;
        if (src.connections === 0) this.bySource.delete(source);
      },
    };
  }

  /** Why a CONNECT from `peer` (ip:port), whose connection has maxDialsPerSession in flight, is refused. */
  refuseDial(peer: string): string {
    return this.refuse('dialsPerSession', `${peer} has ${this.limits.maxDialsPerSession} HBONE CONNECTs pending (--hbone-max-dials-per-session)`).refused;
  }

  stats(): { connections: number; handshakes: number; sources: number; refused: HboneAdmission['refused'] } {
    return { ...this.total, sources: this.bySource.size, refused: { ...this.refused } };
  }

  private refuse(cap: keyof HboneAdmission['refused'], reason: string): { refused: string } {
    this.refused[cap]++;
    this.onRefused?.(reason);
    return { refused: reason };
  }
}

/** The source IP of `ip:port` / `[v6]:port`, v4-mapped v6 as plain v4. */
export const sourceIp = (hostPort: string) => hostPort.replace(/^\[?([^\]]*)\]?:\d+$/, '$1').replace(/^::ffff:(?=\d+\.)/, '');
