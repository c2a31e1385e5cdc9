// Accepting on the relay thread (native/relay/listener.cc): a captured connection reaches
// JavaScript as a file descriptor and its peer, with no net.Socket made for it, and JavaScript
// keeps every decision about it. The relay makes the HBONE route's connection its own from the fd.
import { closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { socketFromFd } from '../fd-socket.ts';
import { openRelayListener, relayAddon, type ExpressOut } from './addon.ts';

/**
 * Accepts per wake-up of one listener: a burst drains in a few loop turns, while the listeners of
 * other pods and the relay's streams are served between them.
 */
export const ACCEPT_BATCH = 32;

/** An accepted connection: its fd is closed, reset or handed on exactly once (a number closed twice may be someone else's by then). */
export class AcceptedFd {
  private owned = true;
  constructor(
    readonly fd: number,
    readonly remoteAddress: string,
    readonly remotePort: number,
    /** The relay listener it came in on (0: none). */
    readonly listener = 0,
    /** Where the app connected to, when the relay already took it from the capture's map. */
    readonly orig?: { address: string; port: number },
  ) {}

  /** No longer ours: handed on, reset or closed. */
  get destroyed(): boolean {
    return !this.owned;
  }

  /** Hands the fd on (to the relay, which closes it): nothing here touches it afterwards. */
  take(): number {
    if (!this.owned) throw new Error(`accepted connection fd ${this.fd} was already handed on or closed`);
    this.owned = false;
    return this.fd;
  }

  /** Refused: a reset, what the app would see without a mesh. */
  reset(): void {
    if (!this.owned) return;
    this.owned = false;
    relayAddon().resetFd(this.fd);
  }

  close(): void {
    if (!this.owned) return;
    this.owned = false;
    closeSync(this.fd);
  }

  /** A paused Node socket on it, for the routes that are not the hot path. */
  toSocket(): Socket {
    return socketFromFd(this.take());
  }
}

export interface NativeListenerOptions {
  /** Accepts per wake-up (ACCEPT_BATCH when absent). */
  batch?: number;
  /** An accept error (EMFILE, say): the listener pauses a moment and goes on. */
  onError?: (code: string) => void;
  /** A connection the relay opened itself on one of this listener's outbound grants (addon.ts outGrant). */
  onExpress?: (x: ExpressOut) => void;
}

/**
 * Accepts on a listening fd on the relay thread. The fd stays the caller's: close() leaves it open.
 * Unlike a net.Server it does not keep the process alive (nothing on the relay thread does).
 */
export class NativeListener {
  /** The relay's number for it: what outbound grants name. */
  readonly id: number;
  private readonly ended: Promise<void>;
  private stopped = false;

  constructor(fd: number, onConnection: (c: AcceptedFd, batchIndex: number) => void, opts: NativeListenerOptions = {}) {
    let end!: () => void;
    this.ended = new Promise<void>((r) => (end = r));
    this.id = openRelayListener(fd, opts.batch ?? ACCEPT_BATCH, {
      accept: (cfd, address, port, index, orig) => onConnection(new AcceptedFd(cfd, address, port, this.id, orig), index),
      express: (x) => opts.onExpress?.(x),
      error: (code) => opts.onError?.(code),
      unlisten: () => end(),
    });
  }

  /**
   * Stops accepting. Resolves once the relay has stopped: every connection it accepted before has
   * been handed to onConnection by then.
   */
  close(): Promise<void> {
    if (!this.stopped) relayAddon().unlisten(this.id);
    this.stopped = true;
    return this.ended;
  }
}
