// Telling HTTP from anything else on a port of undeclared protocol: a request line's every prefix
// keeps the question open and the whole line answers HTTP/1; a byte no request line can hold, or
// a line longer than the bound, answers TCP at once (a binary client never waits on the sniffer).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_REQUEST_LINE, requestLine } from '../../src/waypoint/inbound/sniff.ts';

const prefixes = (s: string) => Array.from({ length: s.length }, (_, i) => Buffer.from(s.slice(0, i + 1)));

describe('requestLine', () => {
  it('keeps every prefix of a request line open and answers h1 at its end', () => {
    for (const line of ['GET / HTTP/1.1\r\n', 'POST /a/b?c=d&e HTTP/1.0\r\n', 'PROPFIND /dav HTTP/1.1\r\n', 'OPTIONS * HTTP/1.1\r\n', 'M-SEARCH http://x/ HTTP/1.1\r\n']) {
      const p = prefixes(line);
      for (const b of p.slice(0, -1)) expect(requestLine(b), JSON.stringify(b.toString())).toBe('more');
      expect(requestLine(p.at(-1)!)).toBe('h1');
      expect(requestLine(Buffer.from(line + 'host: x\r\n'))).toBe('h1');
    }
  });

  it('answers tcp at the first byte a request line cannot hold', () => {
    for (const s of ['\x00', '\x16\x03\x01', ' GET', 'GET  /', 'GET /\x00', 'GET / HTTP/2.0\r\n', 'GET / HTTP/1.1\n', 'GET / SPDY/3\r\n', 'GET / HTTP/1.2\r\n', 'PING\r\n', '*1\r\n$4\r\nPING\r\n'])
      expect(requestLine(Buffer.from(s, 'latin1')), JSON.stringify(s)).toBe('tcp');
  });

  it('bounds what it waits for: a method longer than any, a target past the line bound', () => {
    expect(requestLine(Buffer.from('A'.repeat(33)))).toBe('tcp');
    expect(requestLine(Buffer.from('GET /' + 'a'.repeat(MAX_REQUEST_LINE)))).toBe('tcp');
    expect(requestLine(Buffer.from('GET /' + 'a'.repeat(100)))).toBe('more');
  });

  it('never calls random bytes HTTP/1', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (b) => requestLine(Buffer.from(b)) !== 'h1'), { seed: Number(process.env.FUZZ_SEED ?? 7), numRuns: 2000 });
  });
});
