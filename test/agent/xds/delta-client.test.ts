// The agent's xDS client against the control plane's real Delta ADS server over TLS with node
// credentials: the token and the root are read again for every connection, a persistent refusal
// shows (authFailing), and a state kept on the node is served and then resumed from.
import * as grpc from '@grpc/grpc-js';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { encodeWorkload, TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../../src/api/codec.ts';
import type { Workload } from '../../../src/api/mesh.ts';
import { adsService } from '../../../src/api/protos.ts';
import { DeltaXdsClient } from '../../../src/agent/xds/delta-client.ts';
import { loadSnapshot, saveSnapshot } from '../../../src/agent/state/snapshot.ts';
import { CertificateAuthority, caServerCredentials } from '../../../src/control/ca/index.ts';
import { DeltaAdsServer } from '../../../src/control/xds/delta-ads.ts';
import { ResourceStore } from '../../../src/control/xds/resources.ts';

const log = pino({ level: 'silent' });
const SERVER_NAME = 'weft-control.istio-system.svc';
const dir = mkdtempSync(join(tmpdir(), 'weft-xds-client-'));
const tokenFile = join(dir, 'token');
const rootFile = join(dir, 'root.pem');

const wl = (name: string, ip: string): Workload => ({
  uid: `Kubernetes//Pod/ns/${name}`, name, namespace: 'ns', addresses: [ip], network: '', tunnelProtocol: 'HBONE', trustDomain: 'cluster.local',
  serviceAccount: 'default', node: 'node-0', canonicalName: name, canonicalRevision: 'latest', workloadType: 'POD', workloadName: name,
  services: {}, authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes',
});
const until = async (f: () => boolean, what: string, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

interface Plane {
  port: number;
  /** Tokens the server accepts; every token it was sent, in order. */
  accepted: Set<string>;
  seen: string[];
  store: ResourceStore;
  stop(): void;
}

/** The control plane's ADS server on 127.0.0.1:port with TLS from `ca`, refusing unknown tokens as control/main.ts does. */
async function plane(ca: CertificateAuthority, store: ResourceStore, accepted: Set<string>, port = 0): Promise<Plane> {
  const seen: string[] = [];
  const server = new grpc.Server();
  const ads = new DeltaAdsServer(store, log);
  const authorize = async (call: grpc.ServerDuplexStream<unknown, unknown>) => {
    const auth = call.metadata.get('authorization')[0];
    const token = typeof auth === 'string' ? /^Bearer (.+)$/.exec(auth)?.[1] : undefined;
    seen.push(token ?? '');
    if (!token || !accepted.has(token)) {
      call.emit('error', Object.assign(new Error('node credential required'), { code: grpc.status.UNAUTHENTICATED }));
      return undefined;
    }
    return 'node-0';
  };
  server.addService(adsService().service, { DeltaAggregatedResources: ads.handler(authorize), StreamAggregatedResources: (c: grpc.ServerDuplexStream<unknown, unknown>) => c.end() });
  const kp = await ca.issueServerCert({ dnsNames: [SERVER_NAME], ipAddresses: ['127.0.0.1'] });
  const bound = await new Promise<number>((res, rej) => server.bindAsync(`127.0.0.1:${port}`, caServerCredentials(kp), (e, p) => (e ? rej(e) : res(p))));
  return { port: bound, accepted, seen, store, stop: () => server.forceShutdown() };
}

function storeWith(...ws: Workload[]): ResourceStore {
  const s = new ResourceStore();
  s.replace(TYPE_ADDRESS, new Map(ws.map((w) => [w.uid, encodeWorkload(w)])));
  s.replace(TYPE_AUTHORIZATION, new Map());
  return s;
}

const cleanup: (() => void)[] = [];
afterEach(() => cleanup.splice(0).forEach((f) => f()));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function client(port: number) {
  const c = new DeltaXdsClient({
    address: `127.0.0.1:${port}`,
    nodeId: 'node-0',
    tls: { rootPem: () => readText(rootFile), serverName: SERVER_NAME },
    token: () => readText(tokenFile).trim(),
    log,
  });
  cleanup.push(() => c.close());
  return c;
}
const readText = (f: string) => readFileSync(f, 'utf8');

describe('DeltaXdsClient credentials', () => {
  it('sends the token in the file at each connect, so a rotated token is used after a reconnect', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    writeFileSync(tokenFile, 'tok-1\n');
    let p = await plane(ca, storeWith(wl('a', '10.0.0.1')), new Set(['tok-1']));
    cleanup.push(() => p.stop());
    const c = client(p.port);
    c.start();
    await c.whenSynced();
    expect(p.seen).toEqual(['tok-1']);

    // The kubelet replaced the projected token; the old one is no longer accepted. The stream breaks.
    writeFileSync(tokenFile, 'tok-2\n');
    p.stop();
    p = await plane(ca, storeWith(wl('a', '10.0.0.1'), wl('b', '10.0.0.2')), new Set(['tok-2']), p.port);
    cleanup.push(() => p.stop());
    await until(() => c.state.workloadsByIp.has('10.0.0.2'), 'the state from the reconnected stream');
    expect(p.seen).toEqual(['tok-2']);
    expect(c.authFailures).toBe(0);
    expect(c.authFailing).toBe(false);
  });

  it('reports a credential refused on every reconnect as authFailing, and recovers when a good token appears', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    writeFileSync(tokenFile, 'expired');
    const p = await plane(ca, storeWith(wl('a', '10.0.0.1')), new Set(['fresh']));
    cleanup.push(() => p.stop());
    const c = client(p.port);
    c.start();
    await until(() => c.authFailing, 'authFailing');
    expect(c.synced).toBe(false);
    expect(c.lastError).toMatch(/UNAUTHENTICATED/);
    expect(p.seen.every((t) => t === 'expired')).toBe(true);
    writeFileSync(tokenFile, 'fresh');
    await c.whenSynced();
    expect(c.authFailing).toBe(false);
  });

  it('counts a missing token file as an authentication failure, not a crash', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    rmSync(tokenFile, { force: true });
    const p = await plane(ca, storeWith(), new Set(['t']));
    cleanup.push(() => p.stop());
    const c = client(p.port);
    c.start();
    await until(() => c.authFailing, 'authFailing');
    expect(c.lastError).toMatch(/ENOENT/);
    expect(p.seen).toEqual([]);
  });

  it('reads the root at each connect: a control plane with a new root is trusted once the root file has it', async () => {
    const oldCa = await CertificateAuthority.create();
    writeFileSync(rootFile, oldCa.rootPem);
    writeFileSync(tokenFile, 't');
    let p = await plane(oldCa, storeWith(wl('a', '10.0.0.1')), new Set(['t']));
    cleanup.push(() => p.stop());
    const c = client(p.port);
    c.start();
    await c.whenSynced();
    // The mesh root rotates: the control plane comes back with a certificate from a new CA.
    const newCa = await CertificateAuthority.create();
    p.stop();
    p = await plane(newCa, storeWith(wl('a', '10.0.0.1'), wl('b', '10.0.0.2')), new Set(['t']), p.port);
    cleanup.push(() => p.stop());
    await new Promise((r) => setTimeout(r, 1500)); // reconnects fail: the old root does not trust it
    expect(c.state.workloadsByIp.has('10.0.0.2')).toBe(false);
    writeFileSync(rootFile, newCa.rootPem); // istio-ca-root-cert updated
    await until(() => c.state.workloadsByIp.has('10.0.0.2'), 'the state from the control plane with the new root', 40_000);
  });
});

describe('DeltaXdsClient with state kept on the node', () => {
  it('serves the restored state before any connection, then resumes from its versions', async () => {
    const ca = await CertificateAuthority.create();
    writeFileSync(rootFile, ca.rootPem);
    writeFileSync(tokenFile, 't');
    const store = storeWith(wl('a', '10.0.0.1'), wl('b', '10.0.0.2'));
    const p = await plane(ca, store, new Set(['t']));
    cleanup.push(() => p.stop());
    const first = client(p.port);
    first.start();
    await first.whenSynced();
    const file = join(dir, 'cache', 'xds.json');
    saveSnapshot(file, first.resources());
    first.close();

    // A new process, control plane unreachable (nothing listens on port 1).
    const offline = client(1);
    const saved = loadSnapshot(file)!;
    offline.restore(saved.resources);
    expect(offline.restored).toBe(true);
    expect(offline.synced).toBe(false);
    expect(offline.state.workloadsByIp.get('10.0.0.2')?.name).toBe('b');
    expect(offline.state.workloadsByIp.get('10.0.0.2')).toEqual(first.state.workloadsByIp.get('10.0.0.2'));

    // Back online, with one workload gone meanwhile: the server sends only the removal.
    store.replace(TYPE_ADDRESS, new Map([[wl('a', '10.0.0.1').uid, encodeWorkload(wl('a', '10.0.0.1'))]]));
    const online = client(p.port);
    online.restore(saved.resources);
    online.start();
    await online.whenSynced();
    expect(online.restored).toBe(false);
    expect(online.state.workloadsByIp.has('10.0.0.2')).toBe(false);
    expect(online.state.workloadsByIp.get('10.0.0.1')?.name).toBe('a');
  });

  it('refuses a cache file others can write, or one that does not decode, naming the file', () => {
    const file = join(dir, 'cache', 'bad.json');
    saveSnapshot(file, { [TYPE_ADDRESS]: [{ name: 'x', version: '1', value: Buffer.from([0xff, 0xff, 0xff]) }] });
    const c = client(1);
    expect(() => c.restore(loadSnapshot(file)!.resources)).toThrow();
    expect(c.restored).toBe(false);
    expect(c.state.workloads.size).toBe(0);
    writeFileSync(file, '{}');
    chmodSync(file, 0o644);
    expect(() => loadSnapshot(file)).toThrow(`${file}: mode 644 lets others read or write it`);
    rmSync(file);
    writeFileSync(file, '{"format":"other"}', { mode: 0o600 });
    expect(() => loadSnapshot(file)).toThrow(`${file}: format is "other"`);
  });
});
