// Which HTTP a tunnel speaks: HTTP/2 with prior knowledge opens with the client preface
// ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), anything else is taken as HTTP/1.1. Reads only as far as the
// first byte that differs from the preface (one byte for any HTTP/1 method), then puts what it read
// back, so the parser that takes the tunnel sees every byte.
import type { Duplex } from 'node:stream';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export type Sniffed = 'h1' | 'h2' | 'closed';

/** Resolves with the protocol; 'closed' when the tunnel ended, failed or stayed silent past `timeoutMs`. */
export function sniff(d: Duplex, timeoutMs: number): Promise<Sniffed> {
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
    const onEnd = () => done('closed');
    const onReadable = () => {
      for (let c: Buffer | null; (c = d.read() as Buffer | null) !== null; ) {
        got = Buffer.concat([got, c]);
        const n = Math.min(got.length, H2_PREFACE.length);
        if (!got.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) return done('h1');
        if (got.length >= H2_PREFACE.length) return done('h2');
      }
    };
    const timer = setTimeout(() => done('closed'), timeoutMs);
    d.on('readable', onReadable);
    d.once('end', onEnd);
    d.once('close', onEnd);
    d.once('error', onEnd);
  });
}
