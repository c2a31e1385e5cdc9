// A stream of the native relay's server as the front (server/front.ts) handles it. The relay reports
// each stream's end once (`done`: bytes, the status it sent, why it broke); every answer waits for it.
// A stream accepted as a Duplex is relayed to one end of a Unix socketpair whose other end JavaScript
// reads and writes as a net.Socket.
import { closeSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http2';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { native } from '../../bpf/addon.ts';
import { dialFailure, type DialTarget } from '../server/contract.ts';
import type { FrontStream, StreamEnd } from '../server/front.ts';
import { DIAL_TIMEOUT_MS } from '../settings.ts';
import { relayAddon, socketFd } from './addon.ts';

/** The relay's account of a stream: bytes read from and written to its plaintext socket, the status it sent (0: none). */
export interface RelayDone {
  read: number;
  written: number;
  status: number;
  error: string;
}

export class NativeFrontStream implements FrontStream {
  readonly token = {};
  private ended?: RelayDone;
  private answered = false;
  private gone?: () => void;
  private readonly waiting: Array<(d: RelayDone) => void> = [];

  constructor(
    private readonly session: number,
    private readonly stream: number,
    readonly headers: IncomingHttpHeaders,
    /** Counts a respondDial sent for the session (NativeHboneServer's dial count); the target, to grant it again. */
    private readonly dialSent: (target: DialTarget) => void = () => {},
  ) {}

  /** The relay's `done` for this stream. */
  done(d: RelayDone): void {
    this.ended = d;
    if (!this.answered) this.gone?.();
    for (const w of this.waiting.splice(0)) w(d);
  }

  onGone(listener: () => void): () => void {
    this.gone = listener;
    return () => (this.gone = undefined);
  }

  async refuse(status: number): Promise<{ status: number; error?: string }> {
    this.answer(status, -1);
    const d = await this.end();
    return { status: d.status, error: d.error || undefined };
  }

  async relay(upstream: Socket): Promise<StreamEnd> {
    this.answer(200, socketFd(upstream));
    upstream.destroy(); // the relay holds its own descriptor when it took it
    return this.result(await this.end());
  }

  /**
   * The relay connects the socket on its thread and answers 200 or 503 itself: no JavaScript socket,
   * no round trip between the connect and the answer. From here the session's count of dials in
   * flight covers it (FrontPeer.connecting), so the front's count is settled at once.
   */
  async dial(target: DialTarget, settled: () => void): Promise<StreamEnd> {
    settled();
    const aborted = () => dialFailure(target, 'ECONNABORTED');
    if (this.ended) {
      closeSync(target.fd);
      this.answered = true;
      return { status: 0, sent: 0, received: 0, reason: aborted() };
    }
    try {
      relayAddon().respondDial(this.session, this.stream, target.fd, target.address, target.port, target.timeoutMs ?? DIAL_TIMEOUT_MS);
    } catch (e) {
      // A target the relay cannot take (the addon closed the fd): refused like a failed dial.
      return { ...(await this.refuse(503)), sent: 0, received: 0, reason: dialFailure(target, (e as Error).message) };
    }
    this.dialSent(target);
    this.answered = true;
    return dialEnd(await this.end(), target);
  }

  async accept(use: (stream: Duplex) => void): Promise<StreamEnd> {
    if (this.ended) {
      this.answered = true;
      return this.result(this.ended);
    }
    const [relayEnd, ours] = native().socketPair();
    this.answer(200, relayEnd);
    closeSync(relayEnd); // the relay holds its own descriptor
    use(new Socket({ fd: ours, readable: true, writable: true, allowHalfOpen: true }));
    return this.result(await this.end());
  }

  /** Sent unless the peer left meanwhile: `done` then says status 0. */
  private answer(status: number, fd: number): void {
    if (!this.ended) relayAddon().respond(this.session, this.stream, status, fd);
    this.answered = true;
  }

  private end(): Promise<RelayDone> {
    return this.ended ? Promise.resolve(this.ended) : new Promise((r) => this.waiting.push(r));
  }

  private result(d: RelayDone): StreamEnd {
    return relayEnd(d);
  }
}

/** `sent` flows from the peer to the plaintext socket (written there), `received` back. */
const relayEnd = (d: RelayDone): StreamEnd => ({ status: d.status, sent: d.written, received: d.read, error: d.error || undefined });

/** How a stream the relay dialled ended: relayed, or 503 with the relay's `connect ADDR:PORT: ECODE`, or 0 if it ended first. */
export function dialEnd(d: RelayDone, target: { address: string; port: number }): StreamEnd {
  if (d.status === 200) return relayEnd(d);
  return { status: d.status, sent: 0, received: 0, reason: d.error || dialFailure(target, 'ECONNABORTED') };
}
