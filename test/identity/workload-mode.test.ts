// CertManager and CAClient in workload mode: the waypoint asks the real CA (gRPC over TLS) for its
// own identity with its own token, re-read for every request so a rotated projected token is
// used, and holds that one identity only.
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CAClient, CertManager, type CertManagerOptions, type WorkloadCert } from '../../src/identity/index.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { splitCerts } from '../../src/pki/pem.ts';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import { SERVER_NAME, WORKLOAD_TOKENS, id, opensslVerify, silent, startCA, tmpDir, type TestCA } from '../control/ca/helpers.ts';

const WAYPOINT = id('bookinfo', 'waypoint');
const WAYPOINT_URI = 'spiffe://cluster.local/ns/bookinfo/sa/waypoint';
const dir = tmpDir();
/** The waypoint's projected token, as the kubelet would rotate it. */
const tokenFile = join(dir, 'istio-token');
const readToken = () => readFileSync(tokenFile, 'utf8').trim();
let t: TestCA;
const managers: CertManager[] = [];

function manager(o: Partial<CertManagerOptions> = {}): CertManager {
  const m = new CertManager({ address: t.address, rootPem: t.ca.rootPem, serverName: SERVER_NAME, workloadToken: readToken, identity: WAYPOINT, log: silent, ...o });
  managers.push(m);
  return m;
}

beforeAll(async () => {
  t = await startCA(await CertificateAuthority.create(), dir, undefined, { workloads: 'file' });
});
afterEach(() => {
  managers.splice(0).forEach((m) => m.close());
  writeFileSync(t.workloadTokenFile, JSON.stringify(WORKLOAD_TOKENS));
});
afterAll(async () => {
  await t.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('CertManager in workload mode', () => {
  it('gets its own identity with its own token, naming it only in the CSR', async () => {
    writeFileSync(tokenFile, 'wl-waypoint\n');
    const m = manager({ ttlSeconds: 3600 });
    const c = await m.get();
    expect(c.identity).toEqual(WAYPOINT);
    const chain = splitCerts(c.certChainPem);
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT_URI}`);
    expect(await opensslVerify([...chain, c.rootPem])).toContain('OK');
    expect(t.results.at(-1)).toEqual({ code: grpc.status.OK, caller: 'workload', identity: WAYPOINT_URI });
    expect(await m.get(WAYPOINT)).toBe(c); // the same, named
    expect(m.snapshot()).toMatchObject([{ identity: WAYPOINT_URI, state: 'ready' }]);
  });

  it('holds its one identity only: another is refused without asking the CA', async () => {
    writeFileSync(tokenFile, 'wl-waypoint\n');
    const m = manager();
    const before = t.results.length;
    await expect(m.get(id('bookinfo', 'reviews'))).rejects.toThrow(/holds only spiffe:\/\/cluster.local\/ns\/bookinfo\/sa\/waypoint/);
    expect(t.results.length).toBe(before);
    expect(m.snapshot()).toEqual([]);
  });

  it('renews with the token as it is then: a rotated token is used, the revoked one no longer works', async () => {
    writeFileSync(tokenFile, 'wl-waypoint\n');
    const m = manager({ ttlSeconds: 2, renewFraction: 0.5 });
    const first = await m.get();
    // The kubelet rotates the projected token; the old one is revoked.
    writeFileSync(t.workloadTokenFile, JSON.stringify({ 'wl-rotated': 'bookinfo/waypoint' }));
    writeFileSync(tokenFile, 'wl-rotated\n');
    const [, second] = (await once(m, 'rotated', { signal: AbortSignal.timeout(20_000) })) as [unknown, WorkloadCert];
    expect(second.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    expect(t.results.at(-1)).toEqual({ code: grpc.status.OK, caller: 'workload', identity: WAYPOINT_URI });
    // A manager still holding the revoked token fails closed.
    const stale = manager({ workloadToken: 'wl-waypoint', backoff: { baseMs: 60_000, capMs: 60_000 } });
    await expect(stale.get()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
  });

  it('refuses options that mix the modes', () => {
    const base = { address: '127.0.0.1:1', rootPem: t.ca.rootPem, serverName: SERVER_NAME, log: silent };
    expect(() => new CertManager({ ...base, workloadToken: 'x' })).toThrow(/workloadToken needs the identity/);
    expect(() => new CertManager({ ...base, nodeToken: 'x', identity: WAYPOINT })).toThrow(/identity is for workload mode/);
    expect(() => new CertManager({ ...base, nodeToken: 'x', workloadToken: 'y', identity: WAYPOINT })).toThrow(/exactly one of nodeToken/);
    expect(() => new CAClient(base)).toThrow(/exactly one of nodeToken/);
  });
});

describe('CAClient in workload mode', () => {
  it('sends no ImpersonatedIdentity, and calls the token function for every request', async () => {
    let calls = 0;
    let token = 'wl-waypoint';
    const c = new CAClient({ address: t.address, rootPem: t.ca.rootPem, serverName: SERVER_NAME, workloadToken: () => (calls++, token) });
    try {
      expect(c.mode).toBe('workload');
      const { csrPem } = await createKeyAndCsr(WAYPOINT);
      // The identity argument is not sent: the CA would refuse a workload that names one.
      const chain = await c.createCertificate(csrPem, 'spiffe://cluster.local/ns/bookinfo/sa/reviews', 600);
      expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${WAYPOINT_URI}`);
      token = 'wl-reviews'; // another service account's token: the CSR's identity is not its own
      await expect(c.createCertificate(csrPem, WAYPOINT_URI, 600)).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      expect(calls).toBe(2);
    } finally {
      c.close();
    }
  });
});
