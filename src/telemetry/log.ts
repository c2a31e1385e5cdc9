// A proxy's log: JSON lines (pino) on stdout, written in batches. The access log is a line per
// connection, and a write() per line was the largest single item of the agent's CPU under a storm
// of new connections. Lines collect up to 32 KiB (4 KiB still meant an asynchronous write, with
// its thread-pool round trip, every ~6 connections), and whatever is pending goes out within
// 100 ms, so a quiet proxy's last lines are not held back. pino flushes the rest at exit.
// It was the agent's (src/agent/log.ts); here, beside the access log, any proxy can log this way.
import pino, { type Logger } from 'pino';

export const LOG_FLUSH_MS = 100;

export function batchedLogger(base: Record<string, unknown>): Logger {
  const dest = pino.destination({ dest: 1, sync: false, minLength: 32 * 1024, maxWrite: 64 * 1024 });
  let pending = false;
  const log = pino({ base, hooks: { streamWrite: (s) => ((pending = true), s) } }, dest);
  setInterval(() => {
    if (!pending) return;
    pending = false;
    dest.flush();
  }, LOG_FLUSH_MS).unref();
  return log;
}
