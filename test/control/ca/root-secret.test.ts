// The self-signed root kept in the Secret istio-ca-secret, against the fake API server (the one
// part that is a double): created once and read back by a restart, one root for replicas that
// race to create it, half a root or a forbidden Secret stop the start, transient API errors are
// retried, and the control plane's rendered Role allows exactly what the store does.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '../../../src/identity/csr.ts';
import { CertificateAuthority } from '../../../src/control/ca/authority.ts';
import { CA_SECRET, CA_SECRET_TYPE, secretRootStore } from '../../../src/control/ca/root-secret.ts';
import type { RootPair } from '../../../src/control/ca/self-signed.ts';
import { loadKubeConfig } from '../../../src/control/config/kube-api.ts';
import { CA_SECRET as INSTALL_CA_SECRET } from '../../../src/install/manifests.ts';
import { resolveOptions } from '../../../src/install/options.ts';
import { renderFiles } from '../../../src/install/render.ts';
import { FakeApiServer, type FakeObject } from '../config/fake-apiserver.ts';
import { id, opensslVerify } from './helpers.ts';

const tmp = mkdtempSync(join(tmpdir(), 'weft-root-secret-'));
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const NS = 'istio-system';
const SECRET_PATH = `/api/v1/namespaces/${NS}/secrets`;
type SecretObject = FakeObject & { type?: string; data?: Record<string, string> };
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');

async function setup() {
  const server = await FakeApiServer.start();
  cleanups.push(() => server.close());
  server.serve({ kind: 'Namespace', apiVersion: 'v1', plural: 'namespaces' });
  server.serve({ kind: 'Secret', apiVersion: 'v1', plural: 'secrets' });
  server.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  const kc = loadKubeConfig({ kubeconfig: server.writeKubeconfig(mkdtempSync(join(tmp, 'kc-'))) });
  const log = pino({ level: 'silent' });
  const create = () => CertificateAuthority.create({ trustDomain: 'cluster.local', source: { type: 'self-signed', store: secretRootStore(kc, NS, log, { retryMs: { min: 5, max: 20 } }) } });
  const secret = () => server.get('Secret', NS, CA_SECRET) as SecretObject | undefined;
  return { server, create, secret };
}

/** The CA signs with the key of the root it publishes: a workload chain verifies against it. */
async function signsWith(ca: CertificateAuthority, rootPem: string) {
  const who = id('shop', 'web');
  const chain = await ca.signWorkload((await createKeyAndCsr(who)).csrPem, who);
  expect(await opensslVerify([chain[0]!, rootPem])).toContain('OK');
}

describe('self-signed root in the Secret istio-ca-secret', () => {
  it('is created once, as istiod lays it out, and read back on restart', async () => {
    const { server, create, secret } = await setup();
    const first = await create();
    const s = secret()!;
    expect(s).toMatchObject({ type: CA_SECRET_TYPE, metadata: { name: 'istio-ca-secret', namespace: NS } });
    expect(Object.keys(s.data!).sort()).toEqual(['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem']);
    expect(unb64(s.data!['ca-cert.pem']).trim()).toBe(first.rootPem.trim());
    expect(new X509Certificate(unb64(s.data!['ca-cert.pem'])).checkPrivateKey(createPrivateKey(unb64(s.data!['ca-key.pem'])))).toBe(true);

    // A restart (a new process: a new store, nothing in memory) signs with the same root.
    const again = await create();
    expect(again.rootPem).toBe(first.rootPem);
    await signsWith(again, first.rootPem);
    expect(server.requests.filter((r) => r.method === 'POST').length).toBe(1);
    expect(secret()!.metadata.resourceVersion).toBe(s.metadata.resourceVersion); // never rewritten
  });

  it('two replicas racing to create it end with one root: the loser of the create reads the winner', async () => {
    const { server, create, secret } = await setup();
    // Deterministic race: the other replica's create lands between our read (404) and our create.
    const winner = await newRoot();
    const winnerSecret: FakeObject = { apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, type: CA_SECRET_TYPE, data: dataOf(winner) };
    let raced = false;
    server.fault = (r) => {
      if (r.method === 'POST' && r.path === SECRET_PATH && !raced) {
        raced = true;
        server.apply(winnerSecret);
      }
      return undefined;
    };
    const loser = await create();
    expect(raced).toBe(true);
    expect(loser.rootPem.trim()).toBe(winner.certPem.trim());
    await signsWith(loser, winner.certPem);
    expect(unb64(secret()!.data!['ca-cert.pem'])).toBe(winner.certPem);
    expect(server.requests.filter((r) => r.method === 'POST').length).toBe(1); // answered 409, not retried

    // And for real: several replicas starting at once, whatever the interleaving.
    server.fault = undefined;
    server.remove('Secret', NS, CA_SECRET);
    const replicas = await Promise.all([create(), create(), create()]);
    expect(new Set(replicas.map((c) => c.rootPem)).size).toBe(1);
    expect(unb64(secret()!.data!['ca-cert.pem']).trim()).toBe(replicas[0]!.rootPem.trim());
    for (const r of replicas) await signsWith(r, replicas[0]!.rootPem);
  });

  it('stops the start, naming the Secret and key, when half a root is there; never overwrites it', async () => {
    const { server, create, secret } = await setup();
    const data = dataOf(await newRoot());
    server.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, type: CA_SECRET_TYPE, data: { 'ca-cert.pem': data['ca-cert.pem']!, 'ca-key.pem': '' } });
    const rv = secret()!.metadata.resourceVersion;
    await expect(create()).rejects.toThrow(`Secret ${NS}/${CA_SECRET} key ca-key.pem is missing or empty`);
    server.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, type: CA_SECRET_TYPE, data: { 'ca-cert.pem': b64('garbage'), 'ca-key.pem': data['ca-key.pem']! } });
    await expect(create()).rejects.toThrow(`Secret ${NS}/${CA_SECRET} key ca-cert.pem is not a valid certificate`);
    const mixed = dataOf(await newRoot());
    server.apply({ apiVersion: 'v1', kind: 'Secret', metadata: { name: CA_SECRET, namespace: NS }, type: CA_SECRET_TYPE, data: { 'ca-cert.pem': data['ca-cert.pem']!, 'ca-key.pem': mixed['ca-key.pem']! } });
    await expect(create()).rejects.toThrow(/key ca-key\.pem is not usable: it does not match/);
    expect(server.requests.filter((r) => r.method !== 'GET')).toEqual([]);
    expect(Number(secret()!.metadata.resourceVersion)).toBeGreaterThan(Number(rv)); // only our own applies
  });

  it('says what RBAC is missing when forbidden, and retries the API when it is unavailable', async () => {
    const { server, create, secret } = await setup();
    server.fault = (r) => (r.method === 'GET' && r.path === `${SECRET_PATH}/${CA_SECRET}` ? 403 : undefined);
    await expect(create()).rejects.toThrow(/cannot read Secret istio-system\/istio-ca-secret: .*403.*Role must allow get on secrets in istio-system/);
    server.fault = (r) => (r.method === 'POST' ? 403 : undefined);
    await expect(create()).rejects.toThrow(/cannot create Secret istio-system\/istio-ca-secret: .*Role must allow create/);
    expect(secret()).toBeUndefined();

    let failures = 0;
    server.fault = () => (failures++ < 3 ? 503 : undefined);
    const ca = await create();
    expect(failures).toBeGreaterThan(3);
    expect(unb64(secret()!.data!['ca-cert.pem']).trim()).toBe(ca.rootPem.trim());
  });

  it("the control plane's rendered Role allows what the store does, and no more than that Secret by name", async () => {
    expect(CA_SECRET).toBe(INSTALL_CA_SECRET);
    const { server, create } = await setup();
    await create(); // GET 404, POST
    await create(); // GET
    type Rule = { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] };
    type Obj = { kind: string; metadata?: { name?: string; namespace?: string }; rules?: Rule[]; roleRef?: { kind: string; name: string }; subjects?: { kind: string; name: string; namespace?: string }[] };
    const objs = renderFiles(resolveOptions()).flatMap((f) => f.objects) as Obj[];
    const bindings = objs.filter((o) => o.kind === 'RoleBinding' && o.metadata?.namespace === NS && o.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === 'weft-control'));
    const rules = bindings.flatMap((b) => objs.find((o) => o.kind === b.roleRef!.kind && o.metadata?.name === b.roleRef!.name)!.rules!);
    const secretRules = rules.filter((r) => r.resources.includes('secrets'));
    const allowed = (verb: string, name?: string) => secretRules.some((r) => r.verbs.includes(verb) && (!r.resourceNames?.length || (name !== undefined && r.resourceNames.includes(name))));
    const used = server.requests.filter((r) => r.path.startsWith(SECRET_PATH));
    expect(used.map((r) => r.method)).toEqual(['GET', 'POST', 'GET']);
    for (const r of used) expect(allowed(r.method === 'POST' ? 'create' : 'get', r.path.split('/')[6]), `${r.method} ${r.path}`).toBe(true);
    expect(allowed('get', 'some-other-secret')).toBe(false);
    expect(allowed('list')).toBe(false);
    expect(allowed('update', CA_SECRET)).toBe(false);
    // No ClusterRole grants secrets anywhere.
    expect(objs.filter((o) => o.kind === 'ClusterRole').flatMap((o) => o.rules!).filter((r) => r.resources.includes('secrets'))).toEqual([]);
  });
});

/** A new root and its key, as the CA generates them (kept by a store that only records it). */
async function newRoot(): Promise<RootPair> {
  let kept: RootPair | undefined;
  await CertificateAuthority.create({ source: { type: 'self-signed', store: { load: async () => undefined, create: async (p) => (kept = p), where: (k) => k } } });
  return kept!;
}

const dataOf = (p: RootPair) => ({ 'ca-cert.pem': b64(p.certPem), 'ca-key.pem': b64(p.keyPem) });
