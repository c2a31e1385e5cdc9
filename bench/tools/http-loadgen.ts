// Constant-rate HTTP/1.1 load over a few kept-alive connections: request i (a POST with a
// SIZE-byte body) is due at start + i/rate and goes out on the first idle connection, waiting in
// one queue while all are busy (HTTP/1.1 without pipelining: one request in flight per
// connection, as browsers and Envoy's own clients do). Latency is timed from the intended send
// time (pacer.ts), so queueing behind a slow response counts. Prints one JSON line: percentiles in
// microseconds, requests completed, lost (unanswered at the end), errors (closed connections,
// malformed responses) and non-2xx responses (and their codes).
//   http-loadgen.ts HOST PORT RATE CONNECTIONS SECONDS [SIZE=1024] [WARMUP_SECONDS=1] [HOST_HEADER=HOST] [HEADER_FILE]
// HEADER_FILE: extra request header lines, sent with every request (e.g. a bearer token).
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { histogram, loadArgs, paced, percentiles } from './pacer.ts';

const { host, port, rate, conns, seconds, size, warmup, rest } = loadArgs(process.argv.slice(2), 'http-loadgen.ts HOST PORT RATE CONNECTIONS SECONDS [SIZE] [WARMUP_SECONDS] [HOST_HEADER] [HEADER_FILE]');
const authority = rest[0];
const extra = rest[1] ? readFileSync(rest[1], 'utf8').split('\n').filter(Boolean).map((l) => `${l.trim()}\r\n`).join('') : '';
const request = Buffer.concat([
  Buffer.from(`POST / HTTP/1.1\r\nhost: ${authority ?? host}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${size}\r\n${extra}\r\n`),
  Buffer.alloc(size, 0x62),
]);
const hist = histogram();
const MAX_HEAD = 64 * 1024;

/** One response read incrementally: head, then a Content-Length body or chunks. */
class ResponseReader {
  private buf: Buffer = Buffer.alloc(0);
  private status = 0;
  private left = -1; // body bytes still to come (Content-Length), -1 while in the head
  private chunked = false;

  /** Feeds bytes; returns the statuses of the responses they completed. Throws on malformed input. */
  feed(d: Buffer): number[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const done: number[] = [];
    for (;;) {
      if (this.left < 0 && !this.chunked) {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (this.buf.length > MAX_HEAD) throw new Error('response head too large');
          return done;
        }
        const head = this.buf.subarray(0, end).toString('latin1').split('\r\n');
        this.buf = this.buf.subarray(end + 4);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]!);
        if (!m) throw new Error(`bad status line ${JSON.stringify(head[0]!.slice(0, 80))}`);
        this.status = Number(m[1]);
        const field = (name: string) => head.find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
        this.chunked = /chunked/i.test(field('transfer-encoding') ?? '');
        this.left = this.chunked ? -1 : Number(field('content-length') ?? 0);
        if (!Number.isSafeInteger(this.left) || (!this.chunked && this.left < 0)) throw new Error('bad content-length');
      }
      if (!this.chunked) {
        if (this.buf.length < this.left) return done;
        this.buf = this.buf.subarray(this.left);
        this.left = -1;
        done.push(this.status);
        continue;
      }
      // Chunked: size line, data, CRLF; a zero-size chunk and an empty trailer end the body.
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return done;
      const n = parseInt(this.buf.subarray(0, eol).toString('latin1'), 16);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error('bad chunk size');
      if (n === 0) {
        const end = this.buf.indexOf('\r\n\r\n', eol);
        if (end < 0) return done;
        this.buf = this.buf.subarray(end + 4);
        this.chunked = false;
        this.left = -1;
        done.push(this.status);
        continue;
      }
      if (this.buf.length < eol + 2 + n + 2) return done;
      this.buf = this.buf.subarray(eol + 2 + n + 2);
    }
  }
}

interface Conn {
  sock: Socket;
  reader: ResponseReader;
  /** The intended send time of the request in flight, if any. */
  inFlight?: bigint;
  ready: boolean;
}

const waiting: bigint[] = []; // intended send times of requests due while every connection was busy
let completed = 0;
let errors = 0;
let non2xx = 0;
const codes: Record<string, number> = {}; // the non-2xx statuses, by code
let lost = 0;
let measureFrom = 0n;
let stopping = false;
const all: Conn[] = [];

function dispatch() {
  for (const c of all) {
    if (waiting.length === 0) return;
    if (c.ready && c.inFlight === undefined) {
      c.inFlight = waiting.shift()!;
      c.sock.write(request);
    }
  }
}

function open(c?: Conn): Promise<Conn> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, noDelay: true });
    const conn: Conn = c ?? { sock, reader: new ResponseReader(), ready: false };
    conn.sock = sock;
    conn.reader = new ResponseReader();
    conn.ready = false;
    sock.on('connect', () => {
      conn.ready = true;
      resolve(conn);
      dispatch();
    });
    sock.on('data', (d: Buffer) => {
      let statuses: number[];
      try {
        statuses = conn.reader.feed(d);
      } catch {
        errors++;
        sock.destroy();
        return;
      }
      for (const status of statuses) {
        const intended = conn.inFlight;
        conn.inFlight = undefined;
        if (intended === undefined) {
          errors++; // a response nobody asked for
          continue;
        }
        if (status < 200 || status > 299) {
          non2xx++;
          codes[status] = (codes[status] ?? 0) + 1;
        }
        if (intended >= measureFrom) {
          hist.recordValue(Number(process.hrtime.bigint() - intended) / 1000);
          completed++;
        }
      }
      dispatch();
    });
    sock.on('error', () => {});
    // A connection the other side closed: its request in flight is lost, and a new one takes its place.
    sock.on('close', () => {
      if (stopping) return;
      errors++;
      if (conn.inFlight !== undefined) lost++;
      conn.inFlight = undefined;
      conn.ready = false;
      setTimeout(() => void open(conn), 10);
    });
  });
}

// Bounded: a path that does not connect fails the run instead of hanging it.
const connectGuard = setTimeout(() => {
  console.error(`http-loadgen: no connection to ${host}:${port} within 10 s`);
  process.exit(1);
}, 10_000);
for (let i = 0; i < conns; i++) all.push(await open());
clearTimeout(connectGuard);
const start = process.hrtime.bigint();
measureFrom = start + BigInt(Math.round(warmup * 1e9));
await paced(start, Math.round(rate * (seconds + warmup)), 1e9 / rate, (_i, due) => {
  waiting.push(due);
  dispatch();
});
// Drain: wait for outstanding responses (bounded).
const deadline = Date.now() + 10_000;
const busy = () => waiting.length > 0 || all.some((c) => c.inFlight !== undefined);
while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
stopping = true;
lost += waiting.length + all.filter((c) => c.inFlight !== undefined).length;
for (const c of all) c.sock.destroy();
console.log(JSON.stringify({ rate, connections: conns, seconds, completed, lost, errors, non2xx, codes, ...percentiles(hist) }));
