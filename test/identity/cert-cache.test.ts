// CertManager and the node: certificates kept in a root-only directory are reused by the next
// process while the CA is away (only if still ours, unexpired and under today's root), a
// forgotten identity is neither renewed nor kept, and a rotated root is picked up without restart.
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { formatSpiffe } from '../../src/api/spiffe.ts';
import { CertManager, type CertManagerOptions, type WorkloadCert } from '../../src/identity/index.ts';
import { CertificateAuthority, StaticTokenAuthenticator, caServerCredentials, registerCAService, type CACounters } from '../../src/control/ca/index.ts';
import { SERVER_NAME, id, opensslVerify, silent, tmpDir } from '../control/ca/helpers.ts';

const REVIEWS = id('bookinfo', 'reviews');
const dir = tmpDir();
const rootFile = join(dir, 'root-cert.pem');
const cacheDir = join(dir, 'cache', 'certs');
const managers: CertManager[] = [];
const stops: (() => void)[] = [];

/** The mesh CA over gRPC TLS on 127.0.0.1:port, issuing anything to tok-a (node-a). */
async function serveCA(ca: CertificateAuthority, port = 0): Promise<{ address: string; counters: CACounters; stop: () => void }> {
  writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ 'tok-a': 'node-a' }));
  const server = new grpc.Server();
  const counters = registerCAService(server, { ca, authenticator: await StaticTokenAuthenticator.open(join(dir, 'tokens.json')), canIssue: () => true, log: silent });
  const kp = await ca.issueServerCert({ dnsNames: [SERVER_NAME], ipAddresses: ['127.0.0.1'] });
  const bound = await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${port}`, caServerCredentials(kp), (e, p) => (e ? rej(e) : res(p))));
  const stop = () => server.forceShutdown();
  stops.push(stop);
  return { address: `127.0.0.1:${bound}`, counters, stop };
}

function manager(address: string, o: Partial<CertManagerOptions> = {}): CertManager {
  const m = new CertManager({ address, rootPem: () => readFileSync(rootFile, 'utf8'), serverName: SERVER_NAME, nodeToken: 'tok-a', log: silent, cacheDir, backoff: { baseMs: 100, capMs: 500 }, ...o });
  managers.push(m);
  return m;
}

const cached = () => (existsSync(cacheDir) ? readdirSync(cacheDir).filter((f) => f.endsWith('.json')) : []);
const serial = (c: WorkloadCert) => new X509Certificate(c.certChainPem).serialNumber;

afterEach(() => {
  managers.splice(0).forEach((m) => m.close());
  stops.splice(0).forEach((s) => s());
  rmSync(join(dir, 'cache'), { recursive: true, force: true });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('CertManager with certificates kept on the node', () => {
  it('keeps issued certificates root-only, and a new process uses them while the CA is down', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    const srv = await serveCA(ca);
    const first = await manager(srv.address, { ttlSeconds: 3600 }).get(REVIEWS);
    expect(cached()).toHaveLength(1);
    expect(statSync(cacheDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(cacheDir, cached()[0]!)).mode & 0o777).toBe(0o600);
    srv.stop();

    // The agent restarts; nothing answers at the CA's address.
    const m = manager(srv.address);
    const again = await m.get(REVIEWS);
    expect(serial(again)).toBe(serial(first));
    expect(again.keyPem).toBe(first.keyPem);
    expect(again.rootPem.trim()).toBe(ca.rootPem.trim());
    expect(await opensslVerify([again.certChainPem, again.rootPem])).toContain('OK');
    // Renewal is due at half-life, not now: still served from the node.
    expect(m.snapshot()).toEqual([expect.objectContaining({ identity: formatSpiffe(REVIEWS), state: 'ready' })]);
  });

  it('does not use a cached certificate that expired, is not private, or does not chain to the current root', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    const srv = await serveCA(ca);
    // Expired: 2 s certificates, read back after they ended.
    await manager(srv.address, { ttlSeconds: 2 }).get(REVIEWS);
    managers.splice(0).forEach((m) => m.close());
    await new Promise((r) => setTimeout(r, 2200));
    srv.stop();
    await expect(manager(srv.address, { ttlSeconds: 3600 }).get(REVIEWS)).rejects.toThrow();
    expect(cached()).toEqual([]); // dropped, not kept around

    // Readable by others: not trusted (it may have been read, or planted).
    const srv2 = await serveCA(ca);
    await manager(srv2.address, { ttlSeconds: 3600 }).get(REVIEWS);
    managers.splice(0).forEach((m) => m.close());
    chmodSync(join(cacheDir, cached()[0]!), 0o644);
    srv2.stop();
    await expect(manager(srv2.address).get(REVIEWS)).rejects.toThrow();

    // Issued under a root the node no longer trusts.
    const srv3 = await serveCA(ca);
    await manager(srv3.address, { ttlSeconds: 3600 }).get(REVIEWS);
    managers.splice(0).forEach((m) => m.close());
    srv3.stop();
    writeFileSync(rootFile, (await CertificateAuthority.create()).rootPem);
    await expect(manager(srv3.address).get(REVIEWS)).rejects.toThrow();
  });

  it('forget: no renewal afterwards, and the key leaves the node', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    const srv = await serveCA(ca);
    const m = manager(srv.address, { ttlSeconds: 2 });
    await m.get(REVIEWS);
    await once(m, 'rotated', { signal: AbortSignal.timeout(10_000) }); // renewing every second
    m.forget(REVIEWS);
    const issued = srv.counters.issued;
    expect(cached()).toEqual([]);
    expect(m.snapshot()).toEqual([]);
    await new Promise((r) => setTimeout(r, 2500)); // two renewal periods
    expect(srv.counters.issued).toBe(issued);
  });
});

describe('CertManager and a rotated mesh root', () => {
  it('reads the root again: a CA under a new root is trusted once the root file has it, and every certificate is renewed under it', async () => {
    const oldCa = await CertificateAuthority.create();
    writeFileSync(rootFile, oldCa.rootPem);
    const srv = await serveCA(oldCa);
    const m = manager(srv.address, { ttlSeconds: 3600, rootCheckMs: 200 });
    const before = await m.get(REVIEWS);
    expect(before.rootPem.trim()).toBe(oldCa.rootPem.trim());

    // The control plane comes back with new CA material at the same address.
    srv.stop();
    const newCa = await CertificateAuthority.create();
    await serveCA(newCa, Number(srv.address.split(':')[1]));
    const rotated = once(m, 'rotated', { signal: AbortSignal.timeout(20_000) }) as Promise<[unknown, WorkloadCert]>;
    writeFileSync(rootFile, newCa.rootPem); // istio-ca-root-cert updated; no restart
    const [, after] = await rotated;
    expect(after.rootPem.trim()).toBe(newCa.rootPem.trim());
    expect(await opensslVerify([after.certChainPem, newCa.rootPem])).toContain('OK');
    expect(await m.get(REVIEWS)).toBe(after);
  });

  it('trusts every root of a bundle during a rotation (old and new side by side)', async () => {
    const oldCa = await CertificateAuthority.create();
    const newCa = await CertificateAuthority.create();
    writeFileSync(rootFile, oldCa.rootPem + newCa.rootPem);
    const srv = await serveCA(newCa);
    const c = await manager(srv.address, { ttlSeconds: 3600 }).get(REVIEWS);
    expect(c.rootPem).toContain(oldCa.rootPem.trim());
    expect(c.rootPem).toContain(newCa.rootPem.trim());
  });
});
