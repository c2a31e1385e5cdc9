// Which protocol a tunnel speaks: HTTP/2 with prior knowledge opens with the client preface
// ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); HTTP/1.x with a request line (`METHOD SP target SP
// HTTP/1.x CRLF`). On a port whose protocol is declared HTTP anything that is not HTTP/2 is given
// to the HTTP/1 parser (which answers 400). On a port of undeclared protocol (`detectTcp`) the
// bytes are read only until they can no longer begin either, and then the tunnel is TCP: a
// binary client is told apart at its first byte that no request line could hold, and waits for
// nothing. What was read is put back, so whoever takes the tunnel sees every byte.
import type { Duplex } from 'node:stream';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export type Sniffed = 'h1' | 'h2' | 'tcp' | 'closed';

/** Longest request line looked at before calling a tunnel TCP (Envoy's http_inspector reads at most 64 KiB). */
export const MAX_REQUEST_LINE = 8 * 1024;

const isTchar = (c: number) =>
  (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c));
const VERSION = Buffer.from(' HTTP/1.');

/** What the bytes so far can still be: 'h1' when they hold a whole HTTP/1.x request line, 'more' when they may yet, else 'tcp'. */
export function requestLine(b: Buffer): 'h1' | 'more' | 'tcp' {
  let i = 0;
  while (i < b.length && isTchar(b[i]!)) i++;
  if (i === b.length) return i <= 32 ? 'more' : 'tcp'; // methods are short
  if (i === 0 || b[i] !== 0x20) return 'tcp';
  // The request target: visible ASCII, up to the space before the version.
  let j = i + 1;
  while (j < b.length && b[j]! > 0x20 && b[j]! < 0x7f) j++;
  if (j === b.length) return j < MAX_REQUEST_LINE ? 'more' : 'tcp';
  if (j === i + 1) return 'tcp';
  // " HTTP/1." then a digit, then CRLF.
  for (let k = 0; k < VERSION.length; k++) {
    if (j + k === b.length) return 'more';
    if (b[j + k] !== VERSION[k]) return 'tcp';
  }
  const v = j + VERSION.length;
  if (v === b.length) return 'more';
  if (b[v] !== 0x30 && b[v] !== 0x31) return 'tcp';
  if (v + 1 === b.length) return 'more';
  if (b[v + 1] !== 0x0d) return 'tcp';
  if (v + 2 === b.length) return 'more';
  return b[v + 2] === 0x0a ? 'h1' : 'tcp';
}

/** Resolves with the protocol; 'closed' when the tunnel ended, failed or stayed silent past `timeoutMs`. */
export function sniff(d: Duplex, timeoutMs: number, detectTcp = false): Promise<Sniffed> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0);
    const done = (r: Sniffed) => {
      clearTimeout(timer);
      d.off('readable', onReadable);
      d.off('end', onEnd);
      d.off('close', onEnd);
      d.off('error', onEnd);
      if (got.length && r !== 'closed') d.unshift(got);
      resolve(r);
    };
    // Ended before the protocol was clear (bytes cannot be put back after the end): nothing to serve.
    const onEnd = () => done('closed');
    const onReadable = () => {
      for (let c: Buffer | null; (c = d.read() as Buffer | null) !== null; ) {
        got = Buffer.concat([got, c]);
        const n = Math.min(got.length, H2_PREFACE.length);
        if (got.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
          if (got.length >= H2_PREFACE.length) return done('h2');
          continue;
        }
        if (!detectTcp) return done('h1');
        const line = requestLine(got);
        if (line !== 'more') return done(line);
      }
    };
    const timer = setTimeout(() => done('closed'), timeoutMs);
    d.on('readable', onReadable);
    d.once('end', onEnd);
    d.once('close', onEnd);
    d.once('error', onEnd);
  });
}
