// A small HTTP/2 frame encoder (RFC 9113) with HPACK literal encodings (RFC 7541), and fast-check
// generators of frame sequences a hostile HBONE client might send: well-formed CONNECTs mixed with
// bad lengths, flags, stream ids, settings, header blocks split over CONTINUATION, and junk.
// Frames are kept as plain data (type, flags, stream, payload) so the corpus stores them readably.
import fc from 'fast-check';
import { authorityArb } from './ref-authority.ts';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export const T = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
  /** Added to the declared length: a lie about the payload size. */
  lenDelta?: number;
}

export interface H2Input {
  /** The client preface; 'mangled' flips a byte of it. */
  preface: 'ok' | 'mangled' | 'none';
  frames: Frame[];
  /** Write the bytes in this many pieces (frame boundaries mid-record). */
  pieces: number;
}

export function encodeFrame(f: Frame): Buffer {
  const len = Math.max(0, Math.min(0xffffff, f.payload.length + (f.lenDelta ?? 0)));
  const h = Buffer.alloc(9);
  h.writeUIntBE(len, 0, 3);
  h.writeUInt8(f.type & 0xff, 3);
  h.writeUInt8(f.flags & 0xff, 4);
  h.writeUInt32BE(f.stream >>> 0, 5);
  return Buffer.concat([h, f.payload]);
}

export function encodeInput(i: H2Input): Buffer {
  const pre = Buffer.from(PREFACE);
  if (i.preface === 'mangled') pre[5] = pre[5]! ^ 0x20;
  return Buffer.concat([i.preface === 'none' ? Buffer.alloc(0) : pre, ...i.frames.map(encodeFrame)]);
}

// ---- HPACK (no Huffman, no dynamic-table inserts: literal representations only) ----

function hpackInt(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

const hpackString = (s: string | Buffer) => {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
};

/** Static table indices of the names we use (RFC 7541 appendix A). */
const STATIC_NAME: Record<string, number> = { ':authority': 1, ':method': 2, ':path': 4, ':scheme': 6, ':status': 8 };

export type HeaderRep = 'literal' | 'indexed-name' | 'never-indexed';

/** Literal header field without indexing (or never indexed), new or indexed name. */
export function hpackField(name: string, value: string, rep: HeaderRep = 'literal'): Buffer {
  const idx = STATIC_NAME[name];
  if (rep === 'indexed-name' && idx) return Buffer.concat([hpackInt(idx, 4, 0x00), hpackString(value)]);
  return Buffer.concat([Buffer.from([rep === 'never-indexed' ? 0x10 : 0x00]), hpackString(name), hpackString(value)]);
}

export const connectBlock = (authority: string, extra: [string, string][] = []) =>
  Buffer.concat([hpackField(':method', 'CONNECT', 'indexed-name'), hpackField(':authority', authority, 'indexed-name'), ...extra.map(([n, v]) => hpackField(n, v))]);

// ---- generators ----

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const streamId = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(1, 3, 5) },
  { weight: 1, arbitrary: fc.constantFrom(0, 2, 7, 0x7fffffff, 0x80000001) },
  { weight: 1, arbitrary: fc.nat() },
);
const flags = (common: number) => fc.oneof({ weight: 4, arbitrary: fc.constant(common) }, { weight: 1, arbitrary: fc.nat(255) });
const lenDelta = fc.oneof({ weight: 40, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -9, max: 9 }) }, { weight: 1, arbitrary: fc.constantFrom(1 << 14, (1 << 24) - 1) });

const headerName = fc.oneof(
  fc.constantFrom(':method', ':authority', ':path', ':scheme', ':protocol', ':status', ':bogus', 'forwarded', 'baggage', 'traceparent', 'content-length', 'connection', 'te', 'Upper-Case', '', 'x y', 'host'),
  fc.stringMatching(/^[a-z-]{1,12}$/),
  fc.string({ maxLength: 8 }),
);
const headerValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 24 }) },
  { weight: 1, arbitrary: fc.constantFrom('GET', 'CONNECT', 'connect', '/', 'https', 'trailers', 'keep-alive', '0', '-1', 'a\r\nb', 'x\0y') },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 64 * 1024 }).map((n) => 'v'.repeat(n)) },
);

/** Header lists around a CONNECT: the real thing, with additions, removals, duplicates, junk. */
export const headerList = (echoAuthority: string) =>
  fc
    .record({
      method: fc.oneof({ weight: 6, arbitrary: fc.constant('CONNECT') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'connect', '', 'CONNECT ') }, { weight: 1, arbitrary: fc.constant(undefined) }),
      authority: fc.oneof({ weight: 5, arbitrary: fc.constant(echoAuthority) }, { weight: 3, arbitrary: authorityArb }, { weight: 1, arbitrary: fc.constant(undefined) }),
      extra: fc.array(fc.tuple(headerName, headerValue), { maxLength: 4 }),
      order: fc.constantFrom('pseudo-first', 'extra-first'),
      rep: fc.constantFrom<HeaderRep>('literal', 'indexed-name', 'never-indexed'),
    })
    .map(({ method, authority, extra, order, rep }) => {
      const pseudo: [string, string][] = [];
      if (method !== undefined) pseudo.push([':method', method]);
      if (authority !== undefined) pseudo.push([':authority', authority]);
      const all = order === 'pseudo-first' ? [...pseudo, ...extra] : [...extra, ...pseudo];
      return Buffer.concat(all.map(([n, v]) => hpackField(n, v, rep)));
    });

/** A header block: HPACK from headerList, sometimes with junk representations spliced in. */
const headerBlock = (echoAuthority: string) =>
  fc.oneof(
    { weight: 8, arbitrary: headerList(echoAuthority) },
    {
      weight: 1,
      arbitrary: fc.tuple(headerList(echoAuthority), fc.constantFrom(
        Buffer.from([0x80]), // indexed 0: a decoding error
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), // indexed, huge index
        Buffer.from([0x3f, 0xe1, 0xff, 0x03]), // dynamic table size update above the limit
        Buffer.from([0x00, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]), // bad Huffman name
        Buffer.from([0x00, 0x7f, 0xff, 0xff, 0xff, 0x7f]), // string length far past the block
        Buffer.from([0xc0 | 62]), // dynamic index with an empty table
      )).map(([b, junk]) => Buffer.concat([b, junk])),
    },
    { weight: 1, arbitrary: bytes(64) },
  );

/** HEADERS frames (optionally padded / with priority), or split into HEADERS + CONTINUATION. */
const headersFrames = (echoAuthority: string): fc.Arbitrary<Frame[]> =>
  fc
    .record({
      stream: streamId,
      block: headerBlock(echoAuthority),
      endStream: fc.boolean(),
      padded: fc.nat(8).map((n) => (n > 6 ? n * 7 : -1)),
      priority: fc.option(fc.tuple(fc.nat(), fc.nat(255)), { freq: 6 }),
      split: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) }),
      lastHasEndHeaders: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      contStream: fc.option(streamId, { freq: 6 }),
      randomFlags: fc.option(fc.nat(255), { freq: 30 }),
    })
    .map((r) => {
      const pieces: Buffer[] = [];
      const n = r.split + 1;
      const size = Math.ceil(r.block.length / n) || 1;
      for (let i = 0; i < n; i++) pieces.push(r.block.subarray(i * size, (i + 1) * size));
      let first = pieces[0]!;
      let fl = r.endStream ? F.END_STREAM : 0;
      if (r.priority) {
        const [dep, weight] = r.priority;
        first = Buffer.concat([u32(dep), Buffer.from([weight]), first]);
        fl |= F.PRIORITY;
      }
      if (r.padded >= 0) {
        first = Buffer.concat([Buffer.from([r.padded & 0xff]), first, Buffer.alloc(r.padded % 13)]);
        fl |= F.PADDED;
      }
      if (n === 1 && r.lastHasEndHeaders) fl |= F.END_HEADERS;
      const frames: Frame[] = [{ type: T.HEADERS, flags: r.randomFlags ?? fl, stream: r.stream, payload: first }];
      for (let i = 1; i < n; i++) {
        frames.push({
          type: T.CONTINUATION,
          flags: i === n - 1 && r.lastHasEndHeaders ? F.END_HEADERS : 0,
          stream: r.contStream ?? r.stream,
          payload: pieces[i]!,
        });
      }
      return frames;
    });

const settingsPayload = fc
  .array(
    fc.tuple(
      fc.oneof(fc.integer({ min: 1, max: 8 }), fc.nat(0xffff)),
      fc.oneof(fc.constantFrom(0, 1, 2, 16383, 16384, 1 << 24, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat()),
    ),
    { maxLength: 6 },
  )
  .map((entries) => Buffer.concat(entries.map(([id, v]) => Buffer.concat([Buffer.from([id >> 8, id & 0xff]), u32(v)]))));

const oneFrame = (echoAuthority: string): fc.Arbitrary<Frame[]> =>
  fc.oneof(
    { weight: 6, arbitrary: headersFrames(echoAuthority) },
    {
      weight: 4,
      arbitrary: fc.record({ stream: streamId, data: bytes(300), fl: flags(0), big: fc.option(fc.integer({ min: 1, max: 200_000 }), { freq: 8 }) }).map(({ stream, data, fl, big }) => [
        { type: T.DATA, flags: fl, stream, payload: big ? Buffer.alloc(Math.min(big, 16_384), 0x61) : data },
      ]),
    },
    { weight: 2, arbitrary: fc.record({ ack: fc.boolean(), p: settingsPayload, extra: fc.option(fc.nat(5), { freq: 8 }) }).map(({ ack, p, extra }) => [{ type: T.SETTINGS, flags: ack ? F.ACK : 0, stream: 0, payload: extra ? Buffer.concat([p, Buffer.alloc(extra)]) : p }]) },
    {
      weight: 2,
      arbitrary: fc.record({ stream: streamId, inc: fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0x80000000), fc.nat()), short: fc.boolean() }).map(({ stream, inc, short }) => [
        { type: T.WINDOW_UPDATE, flags: 0, stream: short ? 0 : stream, payload: u32(inc) },
      ]),
    },
    { weight: 2, arbitrary: fc.record({ stream: streamId, code: fc.oneof(fc.nat(14), fc.nat()) }).map(({ stream, code }) => [{ type: T.RST_STREAM, flags: 0, stream, payload: u32(code) }]) },
    { weight: 1, arbitrary: fc.record({ ack: fc.boolean(), p: fc.oneof(bytes(8).filter((b) => b.length === 8), bytes(12)), stream: fc.constantFrom(0, 0, 0, 1) }).map(({ ack, p, stream }) => [{ type: T.PING, flags: ack ? F.ACK : 0, stream, payload: p }]) },
    {
      weight: 1,
      arbitrary: fc.record({ last: fc.nat(), code: fc.nat(14), debug: bytes(16) }).map(({ last, code, debug }) => [
        { type: T.GOAWAY, flags: 0, stream: 0, payload: Buffer.concat([u32(last), u32(code), debug]) },
      ]),
    },
    { weight: 1, arbitrary: fc.record({ stream: streamId, dep: fc.oneof(streamId, fc.nat()), w: fc.nat(255) }).map(({ stream, dep, w }) => [{ type: T.PRIORITY, flags: 0, stream, payload: Buffer.concat([u32(dep), Buffer.from([w])]) }]) },
    { weight: 1, arbitrary: fc.record({ stream: streamId, block: headerList(echoAuthority) }).map(({ stream, block }) => [{ type: T.PUSH_PROMISE, flags: F.END_HEADERS, stream, payload: Buffer.concat([u32(2), block]) }]) },
    { weight: 1, arbitrary: fc.record({ stream: streamId, block: headerList(echoAuthority) }).map(({ stream, block }) => [{ type: T.CONTINUATION, flags: F.END_HEADERS, stream, payload: block }]) },
    { weight: 1, arbitrary: fc.record({ type: fc.integer({ min: 10, max: 255 }), fl: fc.nat(255), stream: streamId, p: bytes(40) }).map(({ type, fl, stream, p }) => [{ type, flags: fl, stream, payload: p }]) },
  );

/** A stream done right: CONNECT, some DATA, then END_STREAM, a reset, or nothing. */
const goodStream = (echoAuthority: string, id: number): fc.Arbitrary<Frame[]> =>
  fc
    .record({
      block: fc.oneof({ weight: 3, arbitrary: fc.constant(connectBlock(echoAuthority)) }, { weight: 2, arbitrary: headerList(echoAuthority) }),
      data: fc.array(bytes(200), { maxLength: 3 }),
      end: fc.constantFrom('end-stream', 'rst', 'open', 'window'),
    })
    .map(({ block, data, end }) => {
      const frames: Frame[] = [{ type: T.HEADERS, flags: F.END_HEADERS, stream: id, payload: block }];
      data.forEach((d, i) => frames.push({ type: T.DATA, flags: end === 'end-stream' && i === data.length - 1 ? F.END_STREAM : 0, stream: id, payload: d }));
      if (end === 'rst') frames.push({ type: T.RST_STREAM, flags: 0, stream: id, payload: u32(8) });
      if (end === 'window') frames.push({ type: T.WINDOW_UPDATE, flags: 0, stream: id, payload: u32(65_535) });
      return frames;
    });

/** Mostly legal sessions (so the stream paths run), with at most a couple of hostile frames spliced in. */
const mostlyValid = (echoAuthority: string): fc.Arbitrary<Frame[]> =>
  fc
    .integer({ min: 1, max: 4 })
    .chain((n) =>
      fc.record({
        streams: fc.tuple(...Array.from({ length: n }, (_, i) => goodStream(echoAuthority, 2 * i + 1))),
        control: fc.array(fc.oneof(
          fc.constant<Frame>({ type: T.PING, flags: 0, stream: 0, payload: Buffer.alloc(8, 7) }),
          fc.constant<Frame>({ type: T.SETTINGS, flags: F.ACK, stream: 0, payload: Buffer.alloc(0) }),
          fc.constant<Frame>({ type: T.WINDOW_UPDATE, flags: 0, stream: 0, payload: u32(1 << 20) }),
        ), { maxLength: 2 }),
        hostile: fc.array(fc.tuple(oneFrame(echoAuthority), fc.nat()), { maxLength: 2 }),
        interleave: fc.boolean(),
      }),
    )
    .map(({ streams, control, hostile, interleave }) => {
      let frames: Frame[] = [];
      if (interleave) {
        // Round-robin over the streams (their HEADERS still go out in id order).
        const queues = streams.map((s) => [...s]);
        while (queues.some((q) => q.length)) for (const q of queues) if (q.length) frames.push(q.shift()!);
      } else frames = streams.flat();
      frames.push(...control);
      for (const [f, at] of hostile) frames.splice(at % (frames.length + 1), 0, ...f);
      return frames;
    });

/** A connection's worth of client bytes: preface, usually SETTINGS, then frames. */
export const h2Input = (echoAuthority: string): fc.Arbitrary<H2Input> =>
  fc
    .record({
      preface: fc.oneof({ weight: 30, arbitrary: fc.constant<'ok'>('ok') }, { weight: 1, arbitrary: fc.constantFrom<'mangled' | 'none'>('mangled', 'none') }),
      settings: fc.oneof({ weight: 5, arbitrary: fc.constant(Buffer.alloc(0)) }, { weight: 1, arbitrary: settingsPayload }, { weight: 1, arbitrary: fc.constant(undefined) }),
      frames: fc.oneof(
        { weight: 2, arbitrary: mostlyValid(echoAuthority).map((fs) => fs.map((f): [Frame[], number] => [[f], 0])) },
        { weight: 1, arbitrary: fc.array(fc.tuple(oneFrame(echoAuthority), lenDelta), { minLength: 1, maxLength: 12 }) },
      ),
      pieces: fc.oneof({ weight: 3, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 2, max: 5 }) }),
    })
    .map(({ preface, settings, frames, pieces }) => {
      const out: Frame[] = settings ? [{ type: T.SETTINGS, flags: 0, stream: 0, payload: settings }] : [];
      for (const [fs, delta] of frames) {
        fs.forEach((f, i) => out.push(delta && i === fs.length - 1 ? { ...f, lenDelta: delta } : f));
      }
      return { preface, frames: out, pieces };
    });
