// A control plane replica drained by SIGTERM while a second one listens on the same addresses
// (SO_REUSEPORT, as the lab rolls its control plane): certificate requests in flight are
// answered, the agent's xDS client moves to the second replica and resumes from the versions it
// holds, and its mesh state does not change at all (the same object: no update reaches the
// proxies). Real processes, TLS and gRPC.
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import protobuf from 'protobufjs';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { DeltaXdsClient } from '../../src/agent/xds/delta-client.ts';
import { CAClient } from '../../src/identity/ca-client.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { rootPath } from '../../src/util/paths.ts';
import { until as waitUntil } from '../util/until.ts';
import { freePorts } from '../util/ports.ts';
import { stopProcess } from '../util/process.ts';

const BIN = new URL('../../bin/weft.js', import.meta.url).pathname;
const SERVER_NAME = 'weft-control.istio-system.svc';
const WEB_1 = 'Kubernetes//Pod/shop/web-1';
const until = (what: string, fn: () => boolean, timeoutMs = 30_000) => waitUntil(what, fn, timeoutMs, 20);

const CONFIG = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  ...[1, 2, 3].map((i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `web-${i}`, namespace: 'shop', labels: { app: 'web' } },
    spec: { nodeName: 'node-1', serviceAccountName: 'web', containers: [{ name: 'app', image: 'web', ports: [{ containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: `10.244.1.${i + 4}`, conditions: [{ type: 'Ready', status: 'True' }] },
  })),
  { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'web', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'] } }] }] } },
];

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Replica {
  cp: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

async function startReplica(argv: string[]): Promise<Replica> {
  const cp = spawn(process.execPath, [BIN, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  cp.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  cp.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => cp.once('exit', (code) => r(code)));
  cleanups.push(() => stopProcess(cp));
  await until('control plane ready', () => {
    if (cp.exitCode !== null) throw new Error(`weft control exited with ${cp.exitCode}:\n${out}`);
    return out.includes('control plane ready');
  });
  return { cp, out: () => out, exited };
}

const getJson = (port: number, path: string) =>
  new Promise<unknown>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${path}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });

/**
 * A CreateCertificate call on its own HTTP/2 connection whose request message is sent only when
 * `send()` is called: begun (headers) now, completed later, so it is in flight across a SIGTERM.
 */
function slowCsr(port: number, root: string, token: string, csr: string, identity: string) {
  const proto = new protobuf.Root().loadSync(rootPath('proto', 'istio', 'ca', 'ca.proto'), { keepCase: true });
  const Req = proto.lookupType('istio.v1.auth.IstioCertificateRequest');
  const Res = proto.lookupType('istio.v1.auth.IstioCertificateResponse');
  const session = h2connect(`https://127.0.0.1:${port}`, { ca: root, servername: SERVER_NAME });
  session.on('error', () => {});
  const stream = session.request({ ':method': 'POST', ':path': '/istio.v1.auth.IstioCertificateService/CreateCertificate', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${token}` });
  const chunks: Buffer[] = [];
  stream.on('data', (d: Buffer) => chunks.push(d));
  const result = new Promise<{ status: string | undefined; chain: string[] }>((resolve, reject) => {
    let status: string | undefined;
    stream.on('response', (h) => (status ??= h['grpc-status'] as string | undefined));
    stream.on('trailers', (t) => (status = t['grpc-status'] as string | undefined));
    stream.on('error', reject);
    stream.on('close', () => {
      const body = Buffer.concat(chunks);
      const chain = body.length >= 5 ? (Res.toObject(Res.decode(body.subarray(5, 5 + body.readUInt32BE(1)))) as { cert_chain?: string[] }).cert_chain ?? [] : [];
      session.close();
      resolve({ status, chain });
    });
  });
  const connected = new Promise<void>((r) => session.once('connect', () => r()));
  return {
    connected,
    result,
    send: () => {
      const msg = Req.encode(Req.fromObject({ csr, validity_duration: 3600, metadata: { fields: { ImpersonatedIdentity: { stringValue: identity } } } })).finish();
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      Buffer.from(msg).copy(frame, 5);
      stream.end(frame);
    },
  };
}

describe('control plane drain (SIGTERM) with a second replica on the same addresses', () => {
  it('answers in-flight CSRs, and the xDS client moves to the other replica with its state unchanged', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-drain-'));
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const config = join(tmp, 'config');
    mkdirSync(config);
    writeFileSync(join(config, 'mesh.yaml'), CONFIG.map((o) => stringify(o)).join('---\n'));
    writeFileSync(join(tmp, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
    const [plain, tls, metrics] = await freePorts(3);
    const rootFile = join(tmp, 'root.pem');
    const argv = [
      'control', '--config-dir', config, '--ca-dir', join(tmp, 'ca'), '--node-tokens', join(tmp, 'tokens.json'), '--root-cert-out', rootFile,
      '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
      '--server-name', SERVER_NAME, '--reuse-port', '--drain-spread-ms', '300', '--drain-deadline-ms', '8000',
    ];
    const a = await startReplica(argv);
    const root = readFileSync(rootFile, 'utf8');

    const xds = new DeltaXdsClient({ address: `127.0.0.1:${tls}`, nodeId: 'node-1', tls: { rootPem: root, serverName: SERVER_NAME }, token: 'node-1-token', log: pino({ level: 'silent' }) });
    cleanups.push(() => xds.close());
    let updates = 0;
    xds.on('update', () => updates++);
    xds.start();
    await until('synced from the first replica', () => xds.synced && xds.state.workloads.size === 3 && xds.state.policies.size === 1);
    const before = { state: xds.state, updates, workloads: [...xds.state.workloads.keys()].sort(), policies: [...xds.state.policies.keys()] };

    // Connections to the first replica, made while it is the only one listening: a CA client's,
    // and one carrying a certificate request begun now and completed after the SIGTERM.
    const ca = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, nodeToken: 'node-1-token' });
    cleanups.push(() => ca.close());
    const { csrPem } = await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' });
    await ca.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/web', 3600);
    const slow = slowCsr(tls!, root, 'node-1-token', csrPem, 'spiffe://cluster.local/ns/shop/sa/web');
    await slow.connected;

    // The second replica: same CA directory (same root), same configuration, same addresses.
    const b = await startReplica(argv);
    expect(readFileSync(rootFile, 'utf8')).toBe(root);

    // Requests on the CA client's connection, then SIGTERM while they are being signed; the slow
    // request's message arrives only once the replica is draining.
    const csrs = Array.from({ length: 20 }, () => ca.createCertificate(csrPem, 'spiffe://cluster.local/ns/shop/sa/web', 3600));
    a.cp.kill('SIGTERM');
    await until('the first replica draining', () => a.out().includes('"draining:'));
    slow.send();
    const answered = await slow.result;
    expect(answered.status).toBe('0');
    expect(new X509Certificate(answered.chain[0]!).subjectAltName).toBe('URI:spiffe://cluster.local/ns/shop/sa/web');
    const chains = await Promise.all(csrs);
    for (const chain of [...chains, answered.chain]) expect(new X509Certificate(chain[0]!).checkIssued(new X509Certificate(root))).toBe(true);

    expect(await a.exited).toBe(0);
    // Signed by the draining replica after its SIGTERM, or by the second one over a new connection: all answered.
    const issued = (r: Replica) => r.out().split('\n').filter((l) => l.includes('"certificate issued"')).length;
    const afterTerm = a.out().slice(a.out().indexOf('"draining:')).split('\n').filter((l) => l.includes('"certificate issued"')).length;
    console.log(`CSRs: ${issued(a)} issued by the drained replica (${afterTerm} after its SIGTERM), ${issued(b)} by the second`);
    expect(afterTerm).toBeGreaterThanOrEqual(1); // the slow one, at least: begun before the drain, answered during it
    expect(a.out()).toContain('drained; exiting');
    expect(a.out()).not.toContain('drain deadline passed');
    // Only the second replica answers now; the client is its client.
    await until('the client connected to the second replica', () => xds.connected);
    let dump: { clients: { node: string; types: Record<string, number> }[] } | undefined;
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      dump = (await getJson(metrics!, '/debug/config_dump')) as typeof dump;
      if (dump?.clients.some((c) => c.node === 'node-1')) break;
    }
    expect(dump?.clients.find((c) => c.node === 'node-1')?.types).toMatchObject({ 'type.googleapis.com/istio.workload.Address': 4, 'type.googleapis.com/istio.security.Authorization': 1 });
    // Resumed from the versions held: nothing changed, not even the state object.
    expect(xds.state).toBe(before.state);
    expect(updates).toBe(before.updates);
    expect([...xds.state.workloads.keys()].sort()).toEqual(before.workloads);
    expect(xds.state.workloads.has(WEB_1)).toBe(true);
    expect(b.cp.exitCode).toBeNull();
  }, 90_000);

  it('without --reuse-port (Kubernetes: one replica per pod): drains and exits; the client keeps its state and resumes on a new process without an update', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-drain-'));
    cleanups.push(() => rmSync(tmp, { recursive: true, force: true }));
    const config = join(tmp, 'config');
    mkdirSync(config);
    writeFileSync(join(config, 'mesh.yaml'), CONFIG.map((o) => stringify(o)).join('---\n'));
    writeFileSync(join(tmp, 'tokens.json'), JSON.stringify({ 'node-1-token': 'node-1' }));
    const [plain, tls, metrics] = await freePorts(3);
    const rootFile = join(tmp, 'root.pem');
    const argv = [
      'control', '--config-dir', config, '--ca-dir', join(tmp, 'ca'), '--node-tokens', join(tmp, 'tokens.json'), '--root-cert-out', rootFile,
      '--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`,
      '--server-name', SERVER_NAME, '--drain-spread-ms', '200', '--drain-deadline-ms', '5000',
    ];
    const a = await startReplica(argv);
    const root = readFileSync(rootFile, 'utf8');
    const logs: string[] = [];
    const xds = new DeltaXdsClient({ address: `127.0.0.1:${tls}`, nodeId: 'node-1', tls: { rootPem: root, serverName: SERVER_NAME }, token: 'node-1-token', log: pino({ level: 'warn' }, { write: (l: string) => void logs.push(l) }) });
    cleanups.push(() => xds.close());
    let updates = 0;
    xds.on('update', () => updates++);
    xds.start();
    await until('synced', () => xds.synced && xds.state.workloads.size === 3);
    const state = xds.state;
    const seen = updates;
    a.cp.kill('SIGTERM');
    expect(await a.exited).toBe(0);
    expect(a.out()).toContain('drained; exiting');
    await until('the client saw the stream end', () => !xds.connected);
    // The first reconnect was for the drain's status (later ones: nothing listening yet).
    const closed = logs.map((l) => JSON.parse(l) as { msg: string; err?: string }).filter((l) => l.msg.startsWith('xds stream closed'));
    expect(closed[0]?.err).toMatch(/^UNAVAILABLE: control plane replica shutting down/);
    expect(xds.state).toBe(state); // serving on its last state meanwhile
    await startReplica(argv);
    await until('the client reconnected', () => xds.connected, 30_000);
    expect(xds.state).toBe(state);
    expect(updates).toBe(seen);
  }, 90_000);
});
