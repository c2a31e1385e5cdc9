import * as grpc from '@grpc/grpc-js';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { formatSpiffe, type SpiffeId } from '../../src/api/spiffe.ts';
import { CertManager, type CertManagerOptions, type WorkloadCert } from '../../src/identity/index.ts';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../../src/api/ca.ts';
import { SERVER_NAME, id, opensslVerify, silent, startCA, tmpDir, type TestCA } from '../control/ca/helpers.ts';

const REVIEWS = id('bookinfo', 'reviews');
const RATINGS = id('bookinfo', 'ratings');
const dir = tmpDir();
let t: TestCA;
const managers: CertManager[] = [];

const allow = (sid: SpiffeId) => t.scheduled.add(`node-a|${formatSpiffe(sid)}`);
const deny = (sid: SpiffeId) => t.scheduled.delete(`node-a|${formatSpiffe(sid)}`);

function manager(o: Partial<CertManagerOptions> = {}, ca: TestCA = t): CertManager {
  const m = new CertManager({
    address: ca.address,
    rootPem: t.ca.rootPem,
    serverName: SERVER_NAME,
    nodeToken: 'tok-a',
    log: silent,
    ...o,
  });
  managers.push(m);
  return m;
}

/** Bounded wait for an event; these are hang guards, not performance assertions. */
const next = <T extends unknown[]>(m: CertManager, event: 'issued' | 'rotated' | 'fetchFailed', ms = 20_000) =>
  once(m, event, { signal: AbortSignal.timeout(ms) }) as Promise<T>;

beforeAll(async () => {
  t = await startCA(await CertificateAuthority.create(), dir);
});
afterEach(() => {
  managers.splice(0).forEach((m) => m.close());
  t.scheduled.clear();
});
afterAll(async () => {
  await t.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('CertManager', () => {
  it('fetches once for concurrent callers and returns a usable, verified certificate', async () => {
    allow(REVIEWS);
    const m = manager({ ttlSeconds: 3600 });
    const before = t.counters.issued;
    const got = await Promise.all(Array.from({ length: 8 }, () => m.get(REVIEWS)));
    expect(t.counters.issued - before).toBe(1);
    expect(new Set(got).size).toBe(1);
    const c = got[0]!;
    const leaf = new X509Certificate(c.certChainPem);
    expect(leaf.subjectAltName).toBe(`URI:${formatSpiffe(REVIEWS)}`);
    expect(leaf.checkPrivateKey(createPrivateKey(c.keyPem))).toBe(true);
    expect(c.rootPem).toBe(t.ca.rootPem);
    expect(c.notAfter.getTime() - c.notBefore.getTime()).toBe(3600_000);
    expect(await opensslVerify([c.certChainPem, c.rootPem])).toContain('OK');
    expect(m.snapshot()).toEqual([expect.objectContaining({ identity: formatSpiffe(REVIEWS), state: 'ready', failures: 0 })]);
    // Cached: no further CA calls.
    await m.get(REVIEWS);
    expect(t.counters.issued - before).toBe(1);
  });

  it('renews at half-life with a short TTL, while an established TLS connection stays up', async () => {
    allow(REVIEWS);
    const m = manager({ ttlSeconds: 4 });
    const first = await m.get(REVIEWS);
    const receivedAt = Date.now();

    // A TLS server presenting the workload certificate, and a client holding a connection to it.
    const server = tls.createServer({ key: first.keyPem, cert: first.certChainPem }, (s) => s.pipe(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const dial = async () => {
      const s = tls.connect({ port, host: '127.0.0.1', ca: t.ca.rootPem, checkServerIdentity: () => undefined });
      await once(s, 'secureConnect');
      return s;
    };
    const echo = async (s: tls.TLSSocket, msg: string) => {
      s.write(msg);
      const [buf] = (await once(s, 'data')) as [Buffer];
      return buf.toString();
    };
    const old = await dial();
    m.on('rotated', (_id, c: WorkloadCert) => server.setSecureContext({ key: c.keyPem, cert: c.certChainPem }));

    try {
      const [rid, second] = await next<[SpiffeId, WorkloadCert]>(m, 'rotated');
      const rotatedAt = Date.now();
      expect(rid).toEqual(REVIEWS);
      expect(second).not.toBe(first);
      expect(await m.get(REVIEWS)).toBe(second);
      expect(second.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
      // Renewed around half-life: not right away, and while the old one was still valid.
      expect(rotatedAt - receivedAt).toBeGreaterThanOrEqual(0.4 * (first.notAfter.getTime() - receivedAt) - 50);
      expect(rotatedAt).toBeLessThan(first.notAfter.getTime());
      expect(new X509Certificate(second.certChainPem).serialNumber).not.toBe(new X509Certificate(first.certChainPem).serialNumber);

      expect(await echo(old, 'still up')).toBe('still up');
      const fresh = await dial();
      expect(fresh.getPeerX509Certificate()?.serialNumber).toBe(new X509Certificate(second.certChainPem).serialNumber);
      expect(old.getPeerX509Certificate()?.serialNumber).toBe(new X509Certificate(first.certChainPem).serialNumber);
      fresh.destroy();
      // And it keeps rotating.
      await next(m, 'rotated');
    } finally {
      old.destroy();
      server.close();
    }
  });

  it('backs off while the CA refuses, keeps serving the current certificate, and recovers', async () => {
    allow(REVIEWS);
    // Long validity, early renewal: the retries happen well inside the certificate's life.
    const m = manager({ ttlSeconds: 60, renewFraction: 0.02, backoff: { baseMs: 100, capMs: 400 } });
    const first = await m.get(REVIEWS);
    deny(REVIEWS);
    const failedAt: number[] = [];
    m.on('fetchFailed', () => failedAt.push(Date.now()));
    for (let i = 0; i < 3; i++) {
      const [, err] = await next<[SpiffeId, grpc.ServiceError]>(m, 'fetchFailed');
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(await m.get(REVIEWS)).toBe(first);
    }
    // Retry gaps are at least the (jittered) exponential delays: 100·0.8, then 200·0.8.
    expect(failedAt[1]! - failedAt[0]!).toBeGreaterThanOrEqual(75);
    expect(failedAt[2]! - failedAt[1]!).toBeGreaterThanOrEqual(155);
    expect(m.snapshot()[0]).toMatchObject({ state: expect.stringMatching(/backoff|renewing/), lastError: expect.stringMatching(/PERMISSION_DENIED|no pod/) });
    expect(m.snapshot()[0]!.failures).toBeGreaterThanOrEqual(3);

    allow(REVIEWS);
    const [, second] = await next<[SpiffeId, WorkloadCert]>(m, 'rotated');
    expect(second).not.toBe(first);
    expect(await m.get(REVIEWS)).toBe(second);
    expect(m.snapshot()[0]).toMatchObject({ state: 'ready', failures: 0 });
  });

  it('fails closed when the certificate expires while the CA is down, then recovers', async () => {
    allow(REVIEWS);
    const m = manager({ ttlSeconds: 2, renewFraction: 0.9, backoff: { baseMs: 200, capMs: 200 } });
    const first = await m.get(REVIEWS);
    deny(REVIEWS);
    await new Promise((r) => setTimeout(r, first.notAfter.getTime() - Date.now() + 50));
    await expect(m.get(REVIEWS)).rejects.toThrow(/PERMISSION_DENIED|no pod/);
    expect(m.snapshot()[0]?.state).toMatch(/expired|renewing/);
    allow(REVIEWS);
    await next(m, 'rotated');
    expect((await m.get(REVIEWS)).notAfter.getTime()).toBeGreaterThan(Date.now());
  });

  it('refuses an identity the CA will not issue, then issues once it is scheduled', async () => {
    const m = manager({ backoff: { baseMs: 100, capMs: 200 } });
    await expect(m.get(RATINGS)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    expect(m.snapshot()[0]?.state).toMatch(/failed|fetching/);
    allow(RATINGS);
    const [, c] = await next<[SpiffeId, WorkloadCert]>(m, 'issued');
    expect(await m.get(RATINGS)).toBe(c);
  });

  it('rejects a response for another identity or from another CA, and a server with the wrong name', async () => {
    const other = await CertificateAuthority.create();
    const rogue = (signer: CertificateAuthority, as: SpiffeId) =>
      startCA(t.ca, dir, {
        CreateCertificate: (
          call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
          cb: grpc.sendUnaryData<IstioCertificateResponse>,
        ) => void signer.signWorkload(call.request.csr, as).then((chain) => cb(null, { cert_chain: chain }), cb),
      });
    const wrongSan = await rogue(t.ca, RATINGS);
    const wrongRoot = await rogue(other, REVIEWS);
    try {
      await expect(manager({}, wrongSan).get(REVIEWS)).rejects.toThrow(/leaf SAN is spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/ratings/);
      await expect(manager({}, wrongRoot).get(REVIEWS)).rejects.toThrow(/does not verify to the mesh root/);
    } finally {
      await wrongSan.stop();
      await wrongRoot.stop();
    }
    allow(REVIEWS);
    await expect(manager({ serverName: 'impostor.svc' }).get(REVIEWS)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('schedules renewal of a long-lived certificate far ahead, beyond setTimeout range', async () => {
    allow(REVIEWS);
    const m = manager({ ttlSeconds: 90 * 86_400 });
    const before = t.counters.issued;
    await m.get(REVIEWS);
    await new Promise((r) => setTimeout(r, 300));
    expect(t.counters.issued - before).toBe(1);
    expect(Date.parse(m.snapshot()[0]!.renewAt!) - Date.now()).toBeGreaterThan(44 * 86_400_000);
  });

  it('forgets identities and refuses after close', async () => {
    allow(REVIEWS);
    allow(RATINGS);
    const m = manager();
    await Promise.all([m.get(REVIEWS), m.get(RATINGS)]);
    expect(m.snapshot().map((s) => s.identity).sort()).toEqual([formatSpiffe(RATINGS), formatSpiffe(REVIEWS)]);
    m.forget(REVIEWS);
    expect(m.snapshot().map((s) => s.identity)).toEqual([formatSpiffe(RATINGS)]);
    m.close();
    await expect(m.get(RATINGS)).rejects.toThrow(/closed/);
  });
});
