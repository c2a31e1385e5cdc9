// A proxy's log: JSON lines (pino) on stdout, written in batches. The access log is a line per
// connection, and a write() per line was the largest single item of the agent's CPU under a storm
// of new connections. Lines collect up to 32 KiB here (4 KiB still meant an asynchronous write,
// with its thread-pool round trip, every ~6 connections), and whatever is pending goes out within
// 100 ms, so a quiet proxy's last lines are not held back; what is pending at exit is written then.
// The batch is ours, not sonic-boom's: sonic-boom measures the UTF-8 length of its whole pending
// string on every line (Buffer.byteLength of a growing concatenation, which also flattens it), so a
// 32 KiB batch there cost a 32 KiB scan and copy per line. Here a line costs a push; a batch is
// joined once and handed to sonic-boom, which writes it as it comes.
// It was the agent's (src/agent/log.ts); here, beside the access log, any proxy can log this way.
import pino, { type Logger } from 'pino';

export const LOG_FLUSH_MS = 100;
/** Characters of pending lines that make a batch (about as many bytes: the lines are mostly ASCII). */
export const LOG_BATCH_CHARS = 32 * 1024;

/** Lines joined into batches for `out`; pino writes here. */
export class LineBatch {
  private parts: string[] = [];
  private size = 0;

  constructor(private readonly out: { write(s: string): unknown }) {}

  write(line: string): boolean {
    this.parts.push(line);
    this.size += line.length;
    if (this.size >= LOG_BATCH_CHARS) this.flush();
    return true;
  }

  get pending(): number {
    return this.size;
  }

  flush(): void {
    if (this.parts.length === 0) return;
    const s = this.parts.length === 1 ? this.parts[0]! : this.parts.join('');
    this.parts = [];
    this.size = 0;
    this.out.write(s);
  }
}

export function batchedLogger(base: Record<string, unknown>): Logger {
  // minLength 0: sonic-boom writes each batch at once (queueing it behind a write in progress).
  const dest = pino.destination({ dest: 1, sync: false, minLength: 0 });
  const batch = new LineBatch(dest);
  setInterval(() => batch.flush(), LOG_FLUSH_MS).unref();
  // pino's own exit hook flushes sonic-boom; this one runs after it and adds what is still here.
  process.on('exit', () => {
    batch.flush();
    try {
      dest.flushSync();
    } catch {
      // stdout gone (a closed pipe): nothing left to write to
    }
  });
  return pino({ base }, batch);
}
