// The native relay's TLS contexts are shared between the HBONE servers of pods with one identity
// (src/hbone/native/contexts.ts): one SSL_CTX per certificate on a node, not one per pod. A
// context must outlive the release of one pod while another still serves with it, follow a
// rotation per server, and be freed when its last server goes.
import { X509Certificate } from 'node:crypto';
import type { Server } from 'node:net';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayAddon } from '../../src/hbone/native/addon.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { RelayContexts, serverContexts } from '../../src/hbone/native/contexts.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { HbonePool, type HboneTunnel } from '../../src/hbone/pool.ts';
import type { Credentials } from '../../src/hbone/settings.ts';
import { connectTo, echo, exchange, frontDoor, tcpServer, webToCart } from './harness.ts';
import { createCa, type TestCa } from './pki.ts';

let ca: TestCa;
let web: Credentials;
let upstream: Server;
let upstreamPort: number;
let front: Awaited<ReturnType<typeof frontDoor>>;
const clientContexts = new RelayContexts();
const pool = new HbonePool<HboneTunnel>({ open: nativeSessionOpener(clientContexts) });
const servers: NativeHboneServer[] = [];

beforeAll(async () => {
  ca = await createCa();
  web = await ca.issue('shop', 'web');
  ({ server: upstream, port: upstreamPort } = await tcpServer(echo));
  front = await frontDoor();
});

afterAll(async () => {
  pool.close(true);
  for (const s of servers) await s.drain(100);
  clientContexts.close();
  upstream.close();
  front.close();
});

async function serve(credentials: () => Credentials): Promise<{ server: NativeHboneServer; port: number }> {
  const server = new NativeHboneServer({ credentials, trustDomain: 'cluster.local', onConnect: async (req) => ({ status: 200, upstream: await connectTo(req.authority.port) }) });
  servers.push(server);
  await server.listen({ port: 0, host: '127.0.0.1' });
  return { server, port: server.address().port };
}

/** A tunnel through the server on `port`, carrying a few bytes both ways. */
async function carries(port: number): Promise<string> {
  const t = await pool.connect({ ...webToCart(port, upstreamPort, web), key: { ...webToCart(port, upstreamPort, web).key, scope: `web-${port}` } });
  const { app, agent } = await front.connection();
  const relayed = t.relay(agent);
  const back = await exchange(app, 'ping');
  await relayed;
  return back.toString();
}

/** The serial number of the certificate the server on `port` presents. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, key: web.key, cert: web.certChain, ca: web.root, ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
      const serial = s.getPeerX509Certificate()?.serialNumber;
      s.destroy();
      if (serial) resolve(serial);
      else reject(new Error('no server certificate'));
    });
    s.once('error', reject);
  });
}

const serial = (c: Credentials) => new X509Certificate(c.certChain).serialNumber;

describe('native HBONE server TLS contexts', () => {
  it('are one per certificate across servers; one released, the others serve on with it', async () => {
    const cart = await ca.issue('shop', 'cart');
    const before = relayAddon().stats().contexts;
    const a = await serve(() => cart);
    const b = await serve(() => cart);
    // Two pods of one identity: one context (each server had its own before).
    expect(relayAddon().stats().contexts).toBe(before + 1);
    expect(serverContexts.stats().contexts).toBe(1);
    expect(await carries(a.port)).toBe('ping');
    const withClient = relayAddon().stats().contexts; // the pool's client context too
    await a.server.drain(100);
    expect(relayAddon().stats().contexts).toBe(withClient);
    expect(await carries(b.port)).toBe('ping');
    expect(await presented(b.port)).toBe(serial(cart));
    await b.server.drain(100);
    expect(serverContexts.stats()).toEqual({ contexts: 0, holders: 0 });
    expect(relayAddon().stats().contexts).toBe(withClient - 1);
  });

  it('follow a rotation per server: the rotated one presents the new certificate, the other keeps the old', async () => {
    const old = await ca.issue('shop', 'cart');
    let rotated = old;
    let bCreds = old;
    const a = await serve(() => rotated);
    const b = await serve(() => bCreds);
    expect(serverContexts.stats()).toEqual({ contexts: 1, holders: 2 });
    rotated = await ca.issue('shop', 'cart');
    a.server.updateCredentials();
    expect(serverContexts.stats()).toEqual({ contexts: 2, holders: 2 });
    expect(await presented(a.port)).toBe(serial(rotated));
    expect(await presented(b.port)).toBe(serial(old));
    expect(await carries(a.port)).toBe('ping');
    expect(await carries(b.port)).toBe('ping');
    // b moves to the same new certificate: it takes a's context, and the old one is freed.
    bCreds = rotated;
    b.server.updateCredentials();
    expect(serverContexts.stats()).toEqual({ contexts: 1, holders: 2 });
    expect(await presented(b.port)).toBe(serial(rotated));
    a.server.close();
    expect(await presented(b.port)).toBe(serial(rotated));
    await b.server.drain(100);
    expect(serverContexts.stats()).toEqual({ contexts: 0, holders: 0 });
  });
});
