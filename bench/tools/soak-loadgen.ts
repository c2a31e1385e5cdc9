// The soak's load generator (bench/soak.ts): HTTP/1.1 GETs at a constant rate per target, for a
// long time, each target over a few kept-alive connections (one request in flight on each) that
// are closed by the generator and opened again after RECYCLE responses, so the run also opens new
// mesh connections all along. Every request is timed from its intended send time (pacer.ts).
// Prints one JSON line every REPORT seconds: cumulative counts per target, and the latency
// percentiles of that interval alone; then a last line with `final: true` and the whole run's
// percentiles (`run`).
//   soak-loadgen.ts SPEC_JSON
// SPEC_JSON: {seconds, reportEvery, recycleAfter, timeoutMs,
//             targets: [{name, host, port, authority, path, rate, conns, deniable?}]}
// A target marked deniable expects 403 (a deliberate denial) as well as 200: its 403s are counted
// as `denied`, apart. Anything else that is not a 2xx, a request whose connection closed under
// it (`lost`) and one unanswered after timeoutMs (`timeouts`) is a failed request.
import { connect, type Socket } from 'node:net';
import { histogram, paced, percentiles } from './pacer.ts';

interface TargetSpec {
  name: string;
  host: string;
  port: number;
  authority: string;
  path: string;
  rate: number;
  conns: number;
  deniable?: boolean;
}
interface Spec {
  seconds: number;
  reportEvery: number;
  recycleAfter: number;
  timeoutMs: number;
  targets: TargetSpec[];
}

const spec = JSON.parse(process.argv[2] ?? '') as Spec;
if (!spec.targets?.length || !(spec.seconds > 0)) throw new Error('usage: soak-loadgen.ts SPEC_JSON (see the header)');

/** Reads HTTP/1.1 responses with a Content-Length body (what http-server.ts and the proxies send); chunked too. */
class ResponseReader {
  private buf: Buffer = Buffer.alloc(0);
  private status = 0;
  private left = -1;
  private chunked = false;
  feed(d: Buffer): number[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const done: number[] = [];
    for (;;) {
      if (this.left < 0 && !this.chunked) {
        const end = this.buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (this.buf.length > 65536) throw new Error('response head too large');
          return done;
        }
        const head = this.buf.subarray(0, end).toString('latin1').split('\r\n');
        this.buf = this.buf.subarray(end + 4);
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]!);
        if (!m) throw new Error('bad status line');
        this.status = Number(m[1]);
        const field = (n: string) => head.find((l) => l.toLowerCase().startsWith(`${n}:`))?.slice(n.length + 1).trim();
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
      const eol = this.buf.indexOf('\r\n');
      if (eol < 0) return done;
      const n = parseInt(this.buf.subarray(0, eol).toString('latin1'), 16);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error('bad chunk size');
      if (n === 0) {
        const end = this.buf.indexOf('\r\n\r\n', eol);
        if (end < 0) return done;
        this.buf = this.buf.subarray(end + 4);
        this.chunked = false;
        done.push(this.status);
        continue;
      }
      if (this.buf.length < eol + 2 + n + 2) return done;
      this.buf = this.buf.subarray(eol + 2 + n + 2);
    }
  }
}

interface Counts {
  sent: number;
  ok: number;
  denied: number;
  non2xx: Record<string, number>;
  lost: number;
  timeouts: number;
  malformed: number;
  connectErrors: number;
  /** Connections the other side closed while no request was on them (not a failed request, but worth seeing). */
  idleCloses: number;
  recycled: number;
}

interface Conn {
  sock: Socket;
  reader: ResponseReader;
  inFlight?: bigint;
  ready: boolean;
  served: number;
  /** Closed by the generator (recycled, timed out): its close is not the peer's. */
  ours: boolean;
}

class Target {
  readonly c: Counts = { sent: 0, ok: 0, denied: 0, non2xx: {}, lost: 0, timeouts: 0, malformed: 0, connectErrors: 0, idleCloses: 0, recycled: 0 };
  hist = histogram();
  /** The whole run's latencies (hist is the current interval's). */
  readonly all = histogram();
  private readonly waiting: bigint[] = [];
  private readonly conns: Conn[] = [];
  private readonly request: Buffer;
  stopping = false;

  constructor(readonly t: TargetSpec) {
    this.request = Buffer.from(`GET ${t.path} HTTP/1.1\r\nhost: ${t.authority}\r\n\r\n`);
    for (let i = 0; i < t.conns; i++) this.open();
  }

  due(at: bigint) {
    this.c.sent++;
    this.waiting.push(at);
    this.dispatch();
  }

  busy = () => this.waiting.length > 0 || this.conns.some((c) => c.inFlight !== undefined);

  private dispatch() {
    for (const c of this.conns) {
      if (this.waiting.length === 0) return;
      if (c.ready && c.inFlight === undefined) {
        c.inFlight = this.waiting.shift()!;
        c.sock.write(this.request);
      }
    }
  }

  private open(prev?: Conn) {
    const sock = connect({ host: this.t.host, port: this.t.port, noDelay: true });
    const conn: Conn = prev ?? { sock, reader: new ResponseReader(), ready: false, served: 0, ours: false };
    if (!prev) this.conns.push(conn);
    Object.assign(conn, { sock, reader: new ResponseReader(), ready: false, served: 0, ours: false, inFlight: undefined });
    let connected = false;
    sock.on('connect', () => {
      connected = true;
      conn.ready = true;
      this.dispatch();
    });
    sock.on('data', (d: Buffer) => {
      if (conn.sock !== sock) return;
      let statuses: number[];
      try {
        statuses = conn.reader.feed(d);
      } catch {
        this.c.malformed++;
        if (conn.inFlight !== undefined) this.c.lost++;
        conn.inFlight = undefined;
        conn.ours = true;
        sock.destroy();
        return;
      }
      for (const status of statuses) {
        const intended = conn.inFlight;
        conn.inFlight = undefined;
        if (intended === undefined) {
          this.c.malformed++;
          continue;
        }
        conn.served++;
        if (status >= 200 && status < 300) this.c.ok++;
        else if (status === 403 && this.t.deniable) this.c.denied++;
        else this.c.non2xx[status] = (this.c.non2xx[status] ?? 0) + 1;
        const us = Math.max(1, Number(process.hrtime.bigint() - intended) / 1000);
        this.hist.recordValue(us);
        this.all.recordValue(us);
      }
      if (conn.served >= spec.recycleAfter && conn.inFlight === undefined && !this.stopping) {
        this.c.recycled++;
        conn.ours = true;
        conn.ready = false;
        sock.destroy();
        return;
      }
      this.dispatch();
    });
    sock.on('error', () => {
      if (!connected) this.c.connectErrors++;
    });
    sock.on('close', () => {
      if (conn.sock !== sock || this.stopping) return;
      if (!conn.ours) {
        if (conn.inFlight !== undefined) this.c.lost++;
        else if (connected) this.c.idleCloses++;
      }
      conn.inFlight = undefined;
      conn.ready = false;
      // The request in flight is lost; the waiting ones go out on the next connection.
      setTimeout(() => this.open(conn), conn.ours ? 0 : connected ? 10 : 100);
    });
  }

  /** Requests waiting or in flight for longer than the timeout are failed (and their connections closed). */
  expire(now: bigint) {
    const limit = BigInt(spec.timeoutMs) * 1_000_000n;
    while (this.waiting.length && now - this.waiting[0]! > limit) {
      this.waiting.shift();
      this.c.timeouts++;
    }
    for (const c of this.conns)
      if (c.inFlight !== undefined && now - c.inFlight > limit) {
        c.inFlight = undefined;
        this.c.timeouts++;
        c.ours = true;
        c.sock.destroy();
      }
  }

  finish() {
    this.stopping = true;
    this.c.lost += this.waiting.length + this.conns.filter((c) => c.inFlight !== undefined).length;
    this.waiting.length = 0;
    for (const c of this.conns) c.sock.destroy();
  }
}

const targets = spec.targets.map((t) => new Target(t));
const start = process.hrtime.bigint() + 200_000_000n;
const t0 = Date.now() + 200;
function report(final = false) {
  const out = {
    t: Math.round((Date.now() - t0) / 100) / 10,
    final,
    targets: Object.fromEntries(targets.map((x) => [x.t.name, { ...x.c, ...percentiles(x.hist), intervalCount: x.hist.totalCount, ...(final ? { run: percentiles(x.all) } : {}) }])),
  };
  for (const x of targets) x.hist.reset();
  console.log(JSON.stringify(out));
}
const reporter = setInterval(() => report(), spec.reportEvery * 1000);
const expirer = setInterval(() => {
  const now = process.hrtime.bigint();
  for (const x of targets) x.expire(now);
}, 500);
await Promise.all(targets.map((x) => paced(start, Math.round(x.t.rate * spec.seconds), 1e9 / x.t.rate, (_i, due) => x.due(due))));
const deadline = Date.now() + Math.max(10_000, spec.timeoutMs);
while (targets.some((x) => x.busy()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
clearInterval(reporter);
clearInterval(expirer);
for (const x of targets) x.finish();
report(true);
process.exit(0);
