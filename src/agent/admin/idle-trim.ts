// After a burst of work the glibc heap keeps the pages its short-lived allocations used (libbpf
// loading a program per pod, OpenSSL parsing certificates and building contexts, protobuf decoding
// mesh updates): free() returns memory to the system only from the top of a heap. Once nothing
// has happened for a while, malloc_trim(0) returns the free pages inside the heaps too: 4 MB of
// the agent's anonymous memory with 100 pods enrolled. Never per connection: at most once per
// quiet period, and only after enrollments, certificates or mesh updates.
export class IdleTrim {
  private timer?: NodeJS.Timeout;
  private trims = 0;
  private lastAt?: string;

  constructor(
    private readonly trim: () => boolean,
    private readonly quietMs = 30_000,
  ) {}

  /** Something allocated and freed a lot: trim once `quietMs` pass without another poke. */
  poke(): void {
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.trim();
      this.trims++;
      this.lastAt = new Date().toISOString();
    }, this.quietMs);
    this.timer.unref();
  }

  stats(): { trims: number; lastAt?: string; pending: boolean } {
    return { trims: this.trims, lastAt: this.lastAt, pending: this.timer !== undefined };
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
