import http2 from 'node:http2';
import type { Server } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HboneError } from '../../../src/hbone/errors.ts';
import { HbonePool, type HboneConnectRequest } from '../../../src/hbone/pool.ts';
import type { Credentials } from '../../../src/hbone/settings.ts';
import { connectTo, echo, readAll, spiffe, startHbone, tcpServer, until, type TestServer } from '../harness.ts';
import { createCa, type TestCa } from '../pki.ts';

const SERVER_ID = spiffe('shop', 'cart');
const CLIENT_ID = spiffe('shop', 'web');

let ca: TestCa;
let serverCreds: Credentials;
let clientCreds: Credentials;
let hb: TestServer;
let pool: HbonePool;
const servers: Server[] = [];
let echoPort: number;

beforeAll(async () => {
  ca = await createCa();
  serverCreds = await ca.issue('shop', 'cart');
  clientCreds = await ca.issue('shop', 'web');
  hb = await startHbone(() => serverCreds);
  pool = new HbonePool();
  const e = await tcpServer(echo);
  servers.push(e.server);
  echoPort = e.port;
});

afterAll(async () => {
  pool.close(true);
  await hb.hbone.drain(100);
  for (const s of servers) s.close();
});

function request(over: Partial<HboneConnectRequest> = {}, port = echoPort): HboneConnectRequest {
  return {
    key: { scope: 'pod-web', srcIdentity: CLIENT_ID, dstIdentity: SERVER_ID, dstAddress: '127.0.0.1' },
    port: hb.port,
    authority: `127.0.0.1:${port}`,
    headers: {},
    credentials: clientCreds,
    dial: () => connectTo(hb.port),
    ...over,
  };
}

async function failure(p: Promise<unknown>): Promise<HboneError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(HboneError);
  return e as HboneError;
}

/** A bare HTTP/2 session to the server, for requests the pool would never send. */
async function rawSession(creds: Credentials): Promise<http2.ClientHttp2Session> {
  const s = tls.connect({ port: hb.port, host: '127.0.0.1', key: creds.key, cert: creds.certChain, ca: creds.root, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  await new Promise((r, j) => s.once('secureConnect', r).once('error', j));
  return http2.connect(`https://127.0.0.1:${hb.port}`, { createConnection: () => s });
}

function status(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<number> {
  return new Promise((resolve, reject) => {
    const st = session.request(headers, { endStream: false });
    st.once('response', (h) => resolve(Number(h[':status'])));
    st.once('error', reject);
  });
}

describe('HBONE server', () => {
  it('relays a CONNECT tunnel both ways, with half-close', async () => {
    const { stream } = await pool.connect(request());
    const echoed = readAll(stream);
    stream.write('ping ');
    stream.end('pong');
    expect(await echoed).toBe('ping pong');
    await until(() => hb.outcomes.length === 1, 5000, 'outcome');
    expect(hb.outcomes[0]).toMatchObject({ status: 200, sent: 9, received: 9, error: undefined });
  });

  it('keeps the client side open after the upstream half-closes first', async () => {
    let got!: Promise<string>;
    const up = await tcpServer((s) => {
      got = readAll(s);
      s.end('bye');
    });
    servers.push(up.server);
    const { stream } = await pool.connect(request({}, up.port));
    expect(await readAll(stream)).toBe('bye');
    stream.end('late data');
    expect(await got).toBe('late data');
  });

  it('speaks TLS 1.3 with AES-GCM, ALPN h2, no SNI, and the HBONE window settings', async () => {
    const seen: Array<{ protocol: string | null; cipher: string; sni: unknown; alpn: unknown }> = [];
    const record = (s: tls.TLSSocket) => seen.push({ protocol: s.getProtocol(), cipher: s.getCipher().name, sni: (s as unknown as { servername: unknown }).servername, alpn: s.alpnProtocol });
    hb.hbone.tls.on('secureConnection', record);
    const p = new HbonePool();
    try {
      const allow = hb.decide;
      let serverSide: http2.Http2Session | undefined;
      hb.decide = (req) => ((serverSide = req.stream.session), allow(req));
      const { stream } = await p.connect(request({ key: { ...request().key, scope: 'settings' } }));
      hb.decide = allow;
      expect(seen).toEqual([{ protocol: 'TLSv1.3', cipher: expect.stringMatching(/^TLS_AES_(128|256)_GCM_SHA(256|384)$/), sni: false, alpn: 'h2' }]);
      const client = stream.session!;
      expect(client.remoteSettings).toMatchObject({ initialWindowSize: 4 * 2 ** 20, maxFrameSize: 2 ** 20, maxConcurrentStreams: 200 });
      expect(client.state.localWindowSize).toBe(16 * 2 ** 20);
      expect(serverSide!.remoteSettings).toMatchObject({ initialWindowSize: 4 * 2 ** 20, maxFrameSize: 2 ** 20 });
      expect(serverSide!.state.localWindowSize).toBe(16 * 2 ** 20);
      stream.end();
    } finally {
      hb.hbone.tls.off('secureConnection', record);
      p.close(true);
    }
  });

  it('moves bulk data through the flow-control windows and counts it', async () => {
    const size = 24 * 2 ** 20;
    const { stream } = await pool.connect(request());
    const outcomes = hb.outcomes.length;
    let got = 0;
    stream.on('data', (c: Buffer) => (got += c.length));
    const ended = new Promise((r) => stream.once('end', r));
    const chunk = Buffer.alloc(2 ** 20, 7);
    for (let i = 0; i < size / chunk.length; i++) if (!stream.write(chunk)) await new Promise((r) => stream.once('drain', r));
    stream.end();
    await ended;
    expect(got).toBe(size);
    await until(() => hb.outcomes.length > outcomes, 5000, 'outcome');
    expect(hb.outcomes.at(-1)).toMatchObject({ status: 200, sent: size, received: size });
  });

  it('turns an upstream reset into a stream reset with CONNECT_ERROR', async () => {
    const up = await tcpServer((s) => s.once('data', () => s.resetAndDestroy()));
    servers.push(up.server);
    const { stream } = await pool.connect(request({}, up.port));
    const closed = new Promise((r) => stream.once('close', r));
    stream.write('trigger');
    await closed;
    expect(stream.rstCode).toBe(http2.constants.NGHTTP2_CONNECT_ERROR);
    await until(() => hb.outcomes.at(-1)?.error !== undefined, 5000, 'outcome');
    expect(hb.outcomes.at(-1)!.error).toMatch(/ECONNRESET/);
  });

  it('shows onConnect the peer identity, address and mesh headers', async () => {
    hb.requests.length = 0;
    const headers = { forwarded: 'for="10.0.0.7:41234"', baggage: 'k8s.namespace.name=shop', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
    const { stream } = await pool.connect(request({ headers }));
    stream.end();
    const req = hb.requests[0]!;
    expect(req.peer).toEqual({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' });
    expect(req.peerAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(req.authority).toEqual({ address: '127.0.0.1', port: echoPort });
    expect(req.headers).toMatchObject(headers);
  });

  it('answers 401 when onConnect denies and 503 when the upstream cannot be reached', async () => {
    const allow = hb.decide;
    hb.decide = async () => ({ status: 401, reason: 'policy shop/deny-all' });
    const denied = await failure(pool.connect(request()));
    hb.decide = allow;
    expect(denied).toMatchObject({ kind: 'status', status: 401 });
    expect(hb.outcomes.at(-1)).toMatchObject({ status: 401, reason: 'policy shop/deny-all' });

    const closed = await tcpServer(() => {});
    await new Promise((r) => closed.server.close(r)); // a port with nothing listening
    expect(await failure(pool.connect(request({}, closed.port)))).toMatchObject({ kind: 'status', status: 503 });
    expect(hb.outcomes.at(-1)!.status).toBe(503);
  });

  it('answers 400 to other methods and to authorities that are not ip:port', async () => {
    const session = await rawSession(clientCreds);
    try {
      expect(await status(session, { ':method': 'GET', ':path': '/' })).toBe(400);
      expect(await status(session, { ':method': 'CONNECT', ':authority': 'example.com:80' })).toBe(400);
      expect(await status(session, { ':method': 'CONNECT', ':authority': '[::1]' })).toBe(400);
      expect(await status(session, { ':method': 'CONNECT', ':authority': '127.0.0.1:99999' })).toBe(400);
    } finally {
      session.destroy();
    }
    expect(await failure(pool.connect(request({ authority: 'cart.shop.svc:80' })))).toMatchObject({ status: 400 });
  });

  it('completes no handshake for a client without a certificate', async () => {
    const before = hb.handshakeErrors.length;
    const s = tls.connect({ port: hb.port, host: '127.0.0.1', ca: serverCreds.root, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
    const data: Buffer[] = [];
    s.on('data', (d: Buffer) => data.push(d));
    const err = await new Promise<Error | undefined>((r) => {
      s.once('error', r);
      s.once('close', () => r(undefined));
    });
    expect(err?.message ?? 'closed').toMatch(/certificate required|closed|ECONNRESET/);
    expect(data).toEqual([]); // not even the server's SETTINGS
    await until(() => hb.handshakeErrors.length > before, 5000, 'handshake error report');
  });

  it('refuses TLS 1.2 and clients that do not offer h2', async () => {
    const attempt = (o: tls.ConnectionOptions) =>
      new Promise<string>((resolve) => {
        const s = tls.connect({ port: hb.port, host: '127.0.0.1', key: clientCreds.key, cert: clientCreds.certChain, ca: clientCreds.root, checkServerIdentity: () => undefined, ...o });
        let data = false;
        s.on('data', () => (data = true));
        s.once('error', (e) => resolve(e.message));
        s.once('close', () => resolve(data ? 'got data' : 'closed'));
      });
    expect(await attempt({ maxVersion: 'TLSv1.2', ALPNProtocols: ['h2'] })).toMatch(/version|alert/i);
    expect(await attempt({ ALPNProtocols: ['http/1.1'] })).not.toBe('got data');
  });

  it('rejects client certificates from another CA or another trust domain', async () => {
    const before = hb.requests.length;
    const stranger = await (await createCa('other root')).issue('shop', 'web');
    const foreign = await failure(pool.connect(request({ credentials: stranger, key: { ...request().key, scope: 'stranger' } })));
    expect(foreign.kind).toBe('tls');

    const otherTd = await ca.issue('shop', 'web', 'other.domain');
    const wrongTd = await failure(pool.connect(request({ credentials: otherTd, key: { ...request().key, scope: 'other-td' } })));
    expect(wrongTd.kind).toBe('tls');
    expect(hb.handshakeErrors).toContain('peer trust domain other.domain is not cluster.local');
    expect(hb.requests.length).toBe(before);
  });

  it('is refused by a client expecting another server identity', async () => {
    const e = await failure(pool.connect(request({ key: { ...request().key, dstIdentity: spiffe('shop', 'payments') } })));
    expect(e.kind).toBe('tls');
    expect(e.message).toContain(`server identity [${SERVER_ID}] is not ${spiffe('shop', 'payments')}`);
  });
});

describe('HBONE server lifecycle', () => {
  it('rotates credentials without breaking open streams', async () => {
    let creds = await ca.issue('shop', 'cart');
    const t = await startHbone(() => creds);
    const p = new HbonePool();
    const req = (dstIdentity: string, scope: string) => request({ key: { scope, srcIdentity: CLIENT_ID, dstIdentity, dstAddress: '127.0.0.1' }, port: t.port, dial: () => connectTo(t.port) });
    try {
      const { stream } = await p.connect(req(SERVER_ID, 'before'));
      const echoed = readAll(stream);
      stream.write('before ');

      creds = await ca.issue('shop', 'cart-v2');
      t.hbone.updateCredentials();

      const fresh = await p.connect(req(spiffe('shop', 'cart-v2'), 'after'));
      fresh.stream.end();
      expect((await failure(p.connect(req(SERVER_ID, 'after-old')))).kind).toBe('tls');

      stream.end('after');
      expect(await echoed).toBe('before after');
    } finally {
      p.close(true);
      await t.hbone.drain(100);
    }
  });

  it('drains: GOAWAY, no new connections, leftovers destroyed at the deadline', async () => {
    const t = await startHbone(() => serverCreds);
    const p = new HbonePool();
    const req = request({ port: t.port, dial: () => connectTo(t.port) });
    try {
      const { stream } = await p.connect(req);
      const closed = new Promise((r) => stream.once('close', r));
      const started = Date.now();
      const drained = t.hbone.drain(300);
      await until(() => p.stats().sessions === 0, 5000, 'pool to drop the GOAWAY session');
      expect((await failure(p.connect(req))).kind).toBe('dial');
      await drained;
      await closed;
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(t.hbone.stats()).toEqual({ sessions: 0, streams: 0 });
    } finally {
      p.close(true);
    }
  });

  it('drains quickly when streams finish before the deadline', async () => {
    const t = await startHbone(() => serverCreds);
    const p = new HbonePool();
    const req = request({ port: t.port, dial: () => connectTo(t.port) });
    const { stream } = await p.connect(req);
    const echoed = readAll(stream);
    const drained = t.hbone.drain(10_000);
    stream.write('still ');
    stream.end('flowing');
    expect(await echoed).toBe('still flowing');
    const started = Date.now();
    await drained;
    expect(Date.now() - started).toBeLessThan(2000);
    p.close(true);
  });
});
