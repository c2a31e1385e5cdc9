// The client side's one account of failure (client/failures.ts), which both transports use: the
// HboneError kind and message for each way opening a session or waiting for a CONNECT's response
// ends. The same kinds on the wire, per transport, are in ../node/server.test.ts and ../native.test.ts.
import { constants } from 'node:http2';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { SessionParams } from '../../../src/hbone/client/contract.ts';
import { PendingConnect, SessionOpening, closedBeforeResponse } from '../../../src/hbone/client/failures.ts';
import { HboneError, StreamRefused } from '../../../src/hbone/errors.ts';
import { connectTo, echo, tcpServer } from '../harness.ts';

const params = (dial: () => Promise<Socket>, timeoutMs = 1000): SessionParams => ({
  dial, credentials: { key: '', certChain: '', root: '' }, dstIdentity: 'spiffe://cluster.local/ns/shop/sa/cart',
  dstAddress: '127.0.0.1', port: 15008, timeoutMs, pingIntervalMs: 1000, pingTimeoutMs: 1000,
});

async function rejection(p: Promise<unknown>): Promise<HboneError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(HboneError);
  return e as HboneError;
}

describe('SessionOpening', () => {
  it('maps a refused dial to kind dial, naming the target and the errno', async () => {
    const closed = await tcpServer(() => {});
    const port = closed.port;
    await new Promise((r) => closed.server.close(r));
    const o = new SessionOpening<string>(params(() => connectTo(port)));
    o.dial(() => expect.unreachable('no socket from a refused dial'));
    expect(await rejection(o.promise)).toMatchObject({ kind: 'dial', message: 'dial 127.0.0.1:15008: ECONNREFUSED' });
  });

  it('times out in the stage it reached, runs the cleanup once, and destroys a socket that comes late', async () => {
    let release!: (s: Socket) => void;
    const late = new Promise<Socket>((r) => (release = r));
    const o = new SessionOpening<string>(params(() => late, 50));
    let cleanups = 0;
    o.cleanup = () => cleanups++;
    o.dial(() => expect.unreachable('the opening timed out before the socket came'));
    expect(await rejection(o.promise)).toMatchObject({ kind: 'timeout', message: 'HBONE connect to 127.0.0.1:15008 timed out in dial' });
    expect(cleanups).toBe(1);
    const up = await tcpServer(echo);
    const sock = await connectTo(up.port);
    release(sock);
    await new Promise((r) => setImmediate(r));
    expect(sock.destroyed).toBe(true);
    up.server.close();
  });

  it('reports TLS failures as kind tls (or timeout when the transport says so), and only the first outcome counts', async () => {
    const a = new SessionOpening<string>(params(() => new Promise(() => {})));
    a.enter('tls');
    a.failTls('certificate verify failed');
    a.fail('dial', 'too late');
    expect(a.succeed('session')).toBe(false);
    expect(await rejection(a.promise)).toMatchObject({ kind: 'tls', message: 'TLS with 127.0.0.1:15008: certificate verify failed' });

    const b = new SessionOpening<string>(params(() => new Promise(() => {})));
    b.failTls('handshake timed out', undefined, 'timeout');
    expect(await rejection(b.promise)).toMatchObject({ kind: 'timeout', message: 'TLS with 127.0.0.1:15008: handshake timed out' });

    const c = new SessionOpening<string>(params(() => new Promise(() => {})));
    expect(c.succeed('session')).toBe(true);
    c.failTls('after the fact');
    expect(await c.promise).toBe('session');
  });
});

describe('PendingConnect', () => {
  const table: Array<[string, (p: PendingConnect<string>) => void, Partial<HboneError> | 'tunnel', boolean]> = [
    ['200 yields the tunnel', (p) => p.response(200, () => 'tunnel'), 'tunnel', false],
    ['401 is kind status', (p) => p.response(401, () => 'tunnel'), { kind: 'status', status: 401, message: 'HBONE CONNECT 10.0.0.7:80: 401' }, false],
    ['503 is kind status', (p) => p.response(503, () => 'tunnel'), { kind: 'status', status: 503 }, false],
    ['a close before any response is kind stream', (p) => p.closed(constants.NGHTTP2_CANCEL), { kind: 'stream', message: 'HBONE CONNECT 10.0.0.7:80: stream closed before a response (code 8)' }, false],
    ['a close after a refusal is kind status', (p) => p.closed(0, 400), { kind: 'status', status: 400 }, false],
    ['no response in time is kind timeout, and cancels the stream', () => {}, { kind: 'timeout', message: 'HBONE CONNECT 10.0.0.7:80: no response in 30 ms' }, true],
  ];
  it.each(table)('%s', async (_name, act, expected, cancels) => {
    let cancelled = false;
    const p = new PendingConnect<string>('10.0.0.7:80', 30, () => (cancelled = true));
    act(p);
    if (expected === 'tunnel') expect(await p.promise).toBe('tunnel');
    else expect(await rejection(p.promise)).toMatchObject(expected);
    await new Promise((r) => setTimeout(r, 50)); // past the deadline: a settled connect is never cancelled
    expect(cancelled).toBe(cancels);
  });

  it('reports REFUSED_STREAM as StreamRefused, which the pool retries on another session', () => {
    expect(closedBeforeResponse('10.0.0.7:80', constants.NGHTTP2_REFUSED_STREAM)).toBeInstanceOf(StreamRefused);
    expect(closedBeforeResponse('10.0.0.7:80', constants.NGHTTP2_CANCEL)).not.toBeInstanceOf(StreamRefused);
  });
});
