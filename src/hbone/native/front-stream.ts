// A stream of the native relay's server as the front (server/front.ts) handles it. The relay reports
// each stream's end once (`done`: bytes, the status it sent, why it broke); every answer waits for it.
// A stream accepted as a Duplex is relayed to one end of a Unix socketpair whose other end JavaScript
// reads and writes as a net.Socket.
import { closeSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http2';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { native } from '../../bpf/addon.ts';
import type { FrontStream, StreamEnd } from '../server/front.ts';
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

  /** `sent` flows from the peer to the plaintext socket (written there), `received` back. */
  private result(d: RelayDone): StreamEnd {
    return { status: d.status, sent: d.written, received: d.read, error: d.error || undefined };
  }
}
