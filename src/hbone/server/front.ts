// The one TypeScript front of an HBONE server, for both transports (node/server.ts, native/server.ts):
// parse a CONNECT into the request the caller decides, run the per-connection dial cap, call
// onConnect, turn its decision (or its failure) into a response, and report one outcome per stream.
// A transport supplies the stream (FrontStream): how to refuse it, relay it to an upstream socket, or
// hand it over as a Duplex, and when the peer has gone.
import type { IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { HboneAdmission } from '../admission.ts';
import { formatAuthority, parseAuthority, type Authority } from '../authority.ts';
import type { ConnectDecision, DialTarget, HboneOutcome, HboneRequestInfo } from './contract.ts';

/** How a stream ended, as its transport saw it; `sent` flows from the peer toward the destination. */
export interface StreamEnd {
  /** The status the peer got; 0 when it left before any response. */
  status: number;
  sent: number;
  received: number;
  error?: string;
  /** A `dial` that failed (dialFailure); the status is then 503, or 0 if the peer had left. */
  reason?: string;
}

/** One CONNECT stream as a transport hands it to the front. */
export interface FrontStream {
  /** What onConnect and the outcome carry as `stream`. */
  readonly token: object;
  readonly headers: IncomingHttpHeaders;
  /** Runs `listener` if the stream ends before it is answered (the peer reset it); returns an unsubscribe. */
  onGone(listener: () => void): () => void;
  /** Answers with a final status and ends the stream; resolves with the status the peer got (0: none). */
  refuse(status: number): Promise<{ status: number; error?: string }>;
  /** Answers 200 and relays to `upstream` until both directions are done (status 0: the peer had left). */
  relay(upstream: Socket): Promise<StreamEnd>;
  /**
   * Connects `target.fd` (the stream's from now on) and relays as relay() does, or answers 503 with
   * `reason`. Calls `settled` once the connect no longer counts against the dial cap: when it ended,
   * or when the transport counts it itself (FrontPeer.connecting).
   */
  dial(target: DialTarget, settled: () => void): Promise<StreamEnd>;
  /** Answers 200 and hands the tunnel to `use` as a Duplex; resolves once the tunnel is done. */
  accept(use: (stream: Duplex) => void): Promise<StreamEnd>;
}

/** The authenticated connection a stream arrived on. */
export interface FrontPeer {
  peer: SpiffeId;
  peerAddress: string;
  /** Streams of this connection in onConnect (deciding, dialling): capped by maxDialsPerSession. */
  dials: number;
  /**
   * Dials of this connection the transport is connecting on its own (the native relay's, as it last
   * counted them plus those sent since), counted against the same cap.
   */
  connecting?: number;
}

export interface FrontHandlers {
  onConnect: (req: HboneRequestInfo) => Promise<ConnectDecision>;
  onComplete?: (outcome: HboneOutcome) => void;
}

/** A request's target, or why it gets 400: the method must be CONNECT, the authority a literal `ip:port`. */
export function parseConnect(headers: IncomingHttpHeaders): { authority: Authority } | { status: 400; reason: string } {
  if (headers[':method'] !== 'CONNECT') return { status: 400, reason: `method ${headers[':method']} is not CONNECT` };
  const authority = parseAuthority(headers[':authority']);
  return authority ? { authority } : { status: 400, reason: `bad authority ${headers[':authority']}` };
}

export const PEER_LEFT_BEFORE_UPSTREAM = 'peer reset the stream before the upstream connected';
export const PEER_LEFT_BEFORE_ACCEPT = 'peer reset the stream before it was accepted';

export class HboneFront {
  constructor(
    private readonly handlers: FrontHandlers,
    private readonly admission: HboneAdmission,
  ) {}

  /** Decides, answers and reports one stream; resolves once its outcome has been reported. */
  async serve(conn: FrontPeer, s: FrontStream): Promise<void> {
    const start = process.hrtime.bigint();
    const { headers, token } = s;
    const parsed = parseConnect(headers);
    const authority = 'authority' in parsed ? parsed.authority : undefined;
    const report = (o: Partial<HboneOutcome> & { status: number }) =>
      this.handlers.onComplete?.({
        stream: token, peer: conn.peer, peerAddress: conn.peerAddress, authority, headers, sent: 0, received: 0,
        durationMs: Number(process.hrtime.bigint() - start) / 1e6, ...o,
      });
    const refuse = async (status: number, reason: string) => report({ ...(await s.refuse(status)), reason });

    if (!('authority' in parsed)) return refuse(parsed.status, parsed.reason);
    if (conn.dials + (conn.connecting ?? 0) >= this.admission.limits.maxDialsPerSession) return refuse(503, this.admission.refuseDial(conn.peerAddress));

    // Counted from the decision until a `dial` has connected (or the transport counts it).
    conn.dials++;
    let counted = true;
    const settled = () => {
      if (counted) conn.dials--;
      counted = false;
    };
    let decision: ConnectDecision;
    try {
      decision = await this.decide(conn, s, parsed.authority);
      if (decision.status === 200 && 'dial' in decision) {
        const r = await s.dial(decision.dial, settled);
        return report(r.status === 0 && !r.reason ? { ...r, error: PEER_LEFT_BEFORE_UPSTREAM } : r);
      }
    } finally {
      settled();
    }
    if (decision.status !== 200) return refuse(decision.status, decision.reason);
    if ('upstream' in decision) {
      const r = await s.relay(decision.upstream);
      return report(r.status === 0 ? { ...r, error: PEER_LEFT_BEFORE_UPSTREAM } : r);
    }
    const use = decision.acceptStream;
    const r = await s.accept((stream) => {
      try {
        use(stream);
      } catch (e) {
        stream.destroy(e as Error);
      }
    });
    report(r.status === 0 ? { ...r, error: PEER_LEFT_BEFORE_ACCEPT } : r);
  }

  /** onConnect, aborted if the peer leaves meanwhile; a failure is a 503. */
  private async decide(conn: FrontPeer, s: FrontStream, authority: Authority): Promise<ConnectDecision> {
    // The signal is made only for a handler that reads it (the agent's decides synchronously):
    // an AbortSignal per stream was a visible share of the CPU a new connection costs.
    let abort: AbortController | undefined;
    let gone: Error | undefined;
    const unsubscribe = s.onGone(() => {
      gone = new Error('peer reset the stream');
      abort?.abort(gone);
    });
    try {
      return await this.handlers.onConnect({
        authority, peer: conn.peer, peerAddress: conn.peerAddress, headers: s.headers, stream: s.token,
        get signal() {
          if (!abort) {
            abort = new AbortController();
            if (gone) abort.abort(gone);
          }
          return abort.signal;
        },
      });
    } catch (e) {
      return { status: 503, reason: `connect ${formatAuthority(authority)}: ${(e as Error).message}` };
    } finally {
      unsubscribe();
    }
  }
}
