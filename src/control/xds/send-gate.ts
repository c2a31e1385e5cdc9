// A new agent's first full sync is megabytes. When a hundred agents connect at once (a control
// plane restart), writing all of them at once holds a hundred full copies in HTTP/2 buffers until
// each client reads its copy. Large responses therefore wait for one of a few slots; a slot frees
// when the client has the response (its ACK or NACK), or after a timeout, so a stuck
// client cannot stall the others. Small responses (the usual deltas) never wait.
export class SendGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly slots = 4,
    readonly largeBytes = 256 * 1024,
    readonly holdMs = 10_000,
  ) {}

  /** Calls `write(done)` once allowed; the writer calls `done` when the client has the response. */
  run(size: number, write: (done: () => void) => void): void {
    if (size < this.largeBytes) return write(() => {});
    const start = () => {
      this.active++;
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        clearTimeout(timer);
        this.active--;
        this.waiting.shift()?.();
      };
      const timer = setTimeout(release, this.holdMs);
      timer.unref();
      write(release);
    };
    if (this.active < this.slots) start();
    else this.waiting.push(start);
  }
}
