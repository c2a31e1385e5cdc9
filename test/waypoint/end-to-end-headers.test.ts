// Which request and response headers the waypoint passes on (RFC 9110 7.6.1): none hop-by-hop, none
// the Connection header names, no HTTP/2 pseudo-headers; everything else as received.
import { describe, expect, it } from 'vitest';
import { endToEnd } from '../../src/waypoint/upstream/forward.ts';

describe('endToEnd', () => {
  it('drops hop-by-hop headers, those Connection names and pseudo-headers; keeps the rest', () => {
    const headers = Object.assign(Object.create(null) as Record<string, string | string[]>, {
      ':authority': 'a', ':path': '/', connection: 'Keep-Alive,  X-Secret , upgrade', 'keep-alive': 'timeout=5', 'x-secret': 's', upgrade: 'websocket',
      'transfer-encoding': 'chunked', te: 'trailers', 'proxy-connection': 'x', 'http2-settings': 'x', trailer: 'x', 'x-kept': 'k', 'set-cookie': ['a=1', 'b=2'], host: 'h',
    });
    expect(endToEnd(headers)).toEqual({ 'x-kept': 'k', 'set-cookie': ['a=1', 'b=2'], host: 'h' });
    expect(endToEnd({ 'x-a': '1', 'content-length': '3' })).toEqual({ 'x-a': '1', 'content-length': '3' });
  });
});
