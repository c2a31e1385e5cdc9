// `weft control --kubeconfig` as a process, against the fake API server (the one part that is a
// double): it publishes istio-ca-root-cert in every namespace with the root its CA signs with,
// serves the pods, services and policies it reads to a Delta xDS client (the agent's own), and
// follows pod changes (not Ready → UNHEALTHY, deleted → removed) from the API's watches.
// A waypoint's projected token (TokenReview) gets its identity from the CA and Envoy config over
// SotW xDS, never the workload API.
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { formatSpiffe } from '../../src/api/spiffe.ts';
import { CAClient } from '../../src/identity/ca-client.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { DeltaXdsClient } from '../../src/agent/xds/delta-client.ts';
import { TYPE_ADDRESS } from '../../src/api/codec.ts';
import { TYPE_CLUSTER } from '../../src/control/xds/envoy/messages.ts';
import { XdsClient } from '../../src/xds/client.ts';
import { ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY } from '../../src/control/ca/root-cert-configmap.ts';
import { NODE_NAME_EXTRA } from '../../src/control/ca/token-review.ts';
import { KUBE_RESOURCES } from '../../src/control/config/kube-api.ts';
import { FakeApiServer, serviceAccountTokens, type FakeObject } from './config/fake-apiserver.ts';
import { until as waitUntil } from '../util/until.ts';
import { freePort } from '../util/ports.ts';
import { stopProcess as stop } from '../util/process.ts';

const BIN = new URL('../../bin/weft.js', import.meta.url).pathname;
const SERVER_NAME = 'weft-control.istio-system.svc';
const AGENT_SA = 'istio-system/weft-agent';
const AGENT_TOKEN = 'agent-token-node-1'; // what the agent on node-1 presents; TokenReview names the node
const WAYPOINT_TOKEN = 'waypoint-projected-token';
const NAMESPACES = ['istio-system', 'shop', 'other'];
const WEB_1 = 'Kubernetes//Pod/shop/web-1';
const WEB_2 = 'Kubernetes//Pod/shop/web-2';

const until = (what: string, fn: () => boolean, timeoutMs = 30_000) => waitUntil(what, fn, timeoutMs, 20);

/** A port nothing listens on now (the kernel's choice, released at once). */
const namespace = (name: string, labels: Record<string, string> = {}): FakeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels }, status: { phase: 'Active' } });
const pod = (name: string, node: string, ip: string, ready = true): FakeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { app: 'web' }, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
  spec: { nodeName: node, serviceAccountName: 'web', containers: [{ name: 'app', image: 'web', ports: [{ containerPort: 8080 }] }] },
  status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
});
const OBJECTS: FakeObject[] = [
  namespace('istio-system'),
  namespace('shop', { 'istio.io/dataplane-mode': 'ambient' }),
  namespace('other'),
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  pod('web-1', 'node-1', '10.244.1.5'),
  pod('web-2', 'node-2', '10.244.2.5'),
  {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'allow-shop', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['shop'] } }], to: [{ operation: { ports: ['8080'] } }] }] },
  },
];

describe('weft control --kubeconfig', () => {
  it('publishes the CA root in every namespace and serves pods, services and policies from the API, following pod changes', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-main-kube-'));
    const server = await FakeApiServer.start();
    for (const r of KUBE_RESOURCES) server.serve(r);
    server.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
    server.serve({ kind: 'Secret', apiVersion: 'v1', plural: 'secrets' });
    server.serve({ kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases' }); // leader election
    for (const o of OBJECTS) server.apply(o);
    // Node authentication as on a cluster: without --node-tokens, `weft control` checks the agents'
    // tokens with TokenReview through the same kubeconfig, so the fake answers TokenReview rather
    // than the test taking the lab's token-file path (which main.ts would also accept here). One
    // token: the agent ServiceAccount's, bound to node-1.
    // A waypoint's projected token too: a workload asking the CA for its own identity.
    server.tokenReview = serviceAccountTokens({
      [AGENT_TOKEN]: { namespace: 'istio-system', serviceAccount: 'weft-agent', audiences: ['istio-ca'], node: 'node-1' },
      [WAYPOINT_TOKEN]: { namespace: 'shop', serviceAccount: 'waypoint', audiences: ['istio-ca'], node: 'node-2' },
    });
    const kubeconfig = server.writeKubeconfig(tmp);

    const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
    const args = ['control', '--kubeconfig', kubeconfig, '--agent-service-account', AGENT_SA, '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1'];
    args.push('--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`);
    const cp = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const log = pino({ level: 'silent' });
    let xds: DeltaXdsClient | undefined;
    let ca: CAClient | undefined;
    try {
      await until('control plane ready', () => {
        if (cp.exitCode !== null) throw new Error(`weft control exited with ${cp.exitCode}:\n${out}`);
        return out.includes('control plane ready');
      });

      // istio-ca-root-cert in every namespace, all with one root.
      const rootIn = (ns: string) => (server.get('ConfigMap', ns, ROOT_CERT_CONFIGMAP) as { data?: Record<string, string> } | undefined)?.data?.[ROOT_CERT_KEY];
      await until('istio-ca-root-cert in every namespace', () => NAMESPACES.every((ns) => rootIn(ns) !== undefined));
      const root = rootIn('shop')!;
      expect(root).toMatch(/^-----BEGIN CERTIFICATE-----\n[^]+-----END CERTIFICATE-----\n?$/);
      for (const ns of NAMESPACES) expect(server.get('ConfigMap', ns, ROOT_CERT_CONFIGMAP)).toMatchObject({ metadata: { labels: { 'istio.io/config': 'true' } }, data: { [ROOT_CERT_KEY]: root } });

      // That root is the CA's: an agent trusting only it reaches the TLS port (the server
      // certificate verifies against it), TokenReview names node-1, web-1's identity is scheduled
      // there, and the chain issued ends in the same root.
      ca = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, nodeToken: AGENT_TOKEN });
      const identity = formatSpiffe({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' });
      const chain = await ca.createCertificate((await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' })).csrPem, identity, 3600);
      expect(chain.length).toBeGreaterThanOrEqual(2);
      expect(chain.at(-1)!.trim()).toBe(root.trim());
      const reviews = server.requests.filter((r) => r.method === 'POST' && r.path === '/apis/authentication.k8s.io/v1/tokenreviews');
      expect(reviews.length).toBe(1);
      expect(reviews[0]!.authorization).toBe('Bearer fake-token'); // asked with the control plane's own credential

      // The waypoint, with its own token and no impersonation, gets its service account's identity.
      const own = new CAClient({ address: `127.0.0.1:${tls}`, rootPem: root, serverName: SERVER_NAME, workloadToken: WAYPOINT_TOKEN });
      try {
        const waypoint = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'waypoint' };
        const issued = await own.createCertificate((await createKeyAndCsr(waypoint)).csrPem, formatSpiffe(waypoint), 3600);
        expect(new X509Certificate(issued[0]!).subjectAltName).toBe(`URI:${formatSpiffe(waypoint)}`);
      } finally {
        own.close();
      }

      // The same projected token on the TLS port's xDS, reviewed by TokenReview: Envoy config
      // (CDS) over SotW; the workload API over Delta refused PERMISSION_DENIED.
      const wp = { address: `127.0.0.1:${tls}`, nodeId: 'waypoint-0', log, token: WAYPOINT_TOKEN, tls: { rootPem: root, serverName: SERVER_NAME } };
      const envoy = new XdsClient({ ...wp, mode: 'sotw', watches: [{ typeUrl: TYPE_CLUSTER, nameOf: () => 'cluster', apply: () => {} }] });
      const address = new XdsClient({ ...wp, mode: 'delta', watches: [{ typeUrl: TYPE_ADDRESS, nameOf: () => 'address', apply: () => {} }] });
      try {
        envoy.start();
        address.start();
        await until('waypoint CDS over SotW; the workload API refused', () => envoy.synced && address.lastError !== undefined);
        expect(envoy.lastError).toBeUndefined();
        expect(address.lastError).toContain(`PERMISSION_DENIED: workload shop/waypoint may not subscribe to type ${TYPE_ADDRESS}`);
        expect(address.synced).toBe(false);
      } finally {
        envoy.close();
        address.close();
      }

      // The agent's Delta xDS client on the plaintext port: both workloads, the service, the policy.
      xds = new DeltaXdsClient({ address: `127.0.0.1:${plain}`, nodeId: 'node-1', log });
      xds.start();
      const client = xds;
      await until('xDS: two workloads, the service and the policy', () => client.synced && client.state.workloads.size === 2 && client.state.services.size === 1 && client.state.policies.size === 1);
      const state = client.state;
      expect(state.workloads.get(WEB_1)).toMatchObject({ name: 'web-1', namespace: 'shop', addresses: ['10.244.1.5'], node: 'node-1', serviceAccount: 'web', tunnelProtocol: 'HBONE', status: 'HEALTHY', authorizationPolicies: ['shop/allow-shop'] });
      expect(state.workloads.get(WEB_2)).toMatchObject({ name: 'web-2', addresses: ['10.244.2.5'], node: 'node-2', tunnelProtocol: 'HBONE', status: 'HEALTHY' });
      expect(state.workloads.get(WEB_1)!.services).toEqual({ 'shop/web.shop.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }] });
      expect([...state.services.values()]).toMatchObject([{ name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', addresses: ['10.96.0.10'] }]);
      expect([...state.policies.values()]).toMatchObject([{ name: 'allow-shop', namespace: 'shop', action: 'ALLOW' }]);

      // A pod that stops being Ready, then a deleted pod, as the API server's watches report them.
      server.apply(pod('web-2', 'node-2', '10.244.2.5', false));
      await until('web-2 UNHEALTHY', () => client.state.workloads.get(WEB_2)?.status === 'UNHEALTHY');
      expect(client.state.workloads.get(WEB_1)?.status).toBe('HEALTHY');
      server.remove('Pod', 'shop', 'web-2');
      await until('web-2 removed', () => !client.state.workloads.has(WEB_2));
      expect([...client.state.workloads.keys()]).toEqual([WEB_1]);
      expect(client.state.services.size).toBe(1);
      expect(client.nacks).toBe(0);
    } catch (e) {
      // The control plane's log says why, when it is the process that failed.
      (e as Error).message += `\n--- weft control output ---\n${out.slice(-8000)}`;
      throw e;
    } finally {
      xds?.close();
      ca?.close();
      await stop(cp);
      await server.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  // The self-signed root lives in the Secret istio-ca-secret: a restarted control plane and a
  // second replica sign with the root the first one made, so agents and workloads keep trusting
  // each other (an emptyDir, or memory, would give each process a root of its own).
  it('keeps one mesh root across a restart and between two replicas started together', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-main-kube-'));
    const server = await FakeApiServer.start();
    for (const r of KUBE_RESOURCES) server.serve(r);
    server.serve({ kind: 'ConfigMap', apiVersion: 'v1', plural: 'configmaps' });
    server.serve({ kind: 'Secret', apiVersion: 'v1', plural: 'secrets' });
    server.serve({ kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', plural: 'leases' }); // leader election
    for (const o of OBJECTS) server.apply(o);
    server.tokenReview = (spec) =>
      spec.token === AGENT_TOKEN
        ? { authenticated: true, audiences: spec.audiences ?? [], user: { username: 'system:serviceaccount:istio-system:weft-agent', extra: { [NODE_NAME_EXTRA]: ['node-1'] } } }
        : { authenticated: false };
    const kubeconfig = server.writeKubeconfig(tmp);
    const procs: { cp: ChildProcess; tls: number; out: string }[] = [];
    const start = async () => {
      const [plain, tls, metrics] = [await freePort(), await freePort(), await freePort()];
      const args = ['control', '--kubeconfig', kubeconfig, '--agent-service-account', AGENT_SA, '--server-name', SERVER_NAME, '--server-ip', '127.0.0.1'];
      args.push('--plain-address', `127.0.0.1:${plain}`, '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`);
      const p = { cp: spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }), tls, out: '' };
      p.cp.stdout!.on('data', (d: Buffer) => (p.out += d.toString()));
      p.cp.stderr!.on('data', (d: Buffer) => (p.out += d.toString()));
      procs.push(p);
      return p;
    };
    const ready = (p: (typeof procs)[number]) =>
      until('control plane ready', () => {
        if (p.cp.exitCode !== null) throw new Error(`weft control exited with ${p.cp.exitCode}:\n${p.out}`);
        return p.out.includes('control plane ready');
      });
    /** The root a replica's CA chains end in (its TLS port verified against `trusted`). */
    const rootOf = async (p: (typeof procs)[number], trusted: string) => {
      const ca = new CAClient({ address: `127.0.0.1:${p.tls}`, rootPem: trusted, serverName: SERVER_NAME, nodeToken: AGENT_TOKEN });
      try {
        const chain = await ca.createCertificate((await createKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' })).csrPem, formatSpiffe({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'web' }), 3600);
        return chain.at(-1)!.trim();
      } finally {
        ca.close();
      }
    };
    try {
      // Two replicas at once, with no Secret yet: both race to create it.
      const [a, b] = [await start(), await start()];
      await Promise.all([ready(a), ready(b)]);
      const secret = server.get('Secret', 'istio-system', 'istio-ca-secret') as { type?: string; data?: Record<string, string> } | undefined;
      expect(secret?.type).toBe('istio.io/ca-root');
      const root = Buffer.from(secret!.data!['ca-cert.pem']!, 'base64').toString('utf8').trim();
      expect(await rootOf(a, root)).toBe(root);
      expect(await rootOf(b, root)).toBe(root);
      const rootIn = (ns: string) => (server.get('ConfigMap', ns, ROOT_CERT_CONFIGMAP) as { data?: Record<string, string> } | undefined)?.data?.[ROOT_CERT_KEY]?.trim();
      await until('istio-ca-root-cert published', () => NAMESPACES.every((ns) => rootIn(ns) === root));
      // The ConfigMaps are leader-only writes: one replica holds the Lease and runs them.
      const leaders = () => [a, b].filter((p) => p.out.includes('became the leader'));
      expect(leaders()).toHaveLength(1);
      expect((server.get('Lease', 'istio-system', 'weft-control-leader')?.spec as { holderIdentity?: string }).holderIdentity).toMatch(/_[0-9a-f]{8}$/);

      // A restart: the new process finds the root and keeps it.
      const posts = () => server.requests.filter((r) => r.method === 'POST' && r.path === '/api/v1/namespaces/istio-system/secrets').length;
      const created = posts();
      expect(created).toBeGreaterThanOrEqual(1);
      await stop(a.cp);
      const a2 = await start();
      await ready(a2);
      expect(await rootOf(a2, root)).toBe(root);
      expect(posts()).toBe(created); // read, not created again
      expect(NAMESPACES.every((ns) => rootIn(ns) === root)).toBe(true);
    } catch (e) {
      (e as Error).message += `\n--- weft control output ---\n${procs.map((p) => p.out.slice(-4000)).join('\n---\n')}`;
      throw e;
    } finally {
      for (const p of procs) await stop(p.cp);
      await server.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  // As istiod: with --waypoint-image, a Gateway of class istio-waypoint becomes its Deployment,
  // Service and ServiceAccount, the pods pointed at this control plane by --waypoint-control-address.
  it('deploys a waypoint Gateway with --waypoint-image', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'weft-main-kube-'));
    const server = await FakeApiServer.start();
    for (const r of KUBE_RESOURCES) server.serve(r);
    for (const [kind, apiVersion, plural] of [['ConfigMap', 'v1', 'configmaps'], ['Secret', 'v1', 'secrets'], ['Deployment', 'apps/v1', 'deployments'], ['Lease', 'coordination.k8s.io/v1', 'leases']] as const) server.serve({ kind, apiVersion, plural });
    for (const o of OBJECTS) server.apply(o);
    server.apply({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name: 'waypoint', namespace: 'shop' }, spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } });
    const [tls, metrics] = [await freePort(), await freePort()];
    const args = ['control', '--kubeconfig', server.writeKubeconfig(tmp), '--server-name', SERVER_NAME, '--no-plain-address', '--tls-address', `127.0.0.1:${tls}`, '--metrics-address', `127.0.0.1:${metrics}`, '--waypoint-image', 'weft:test'];
    const cp = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    cp.stdout.on('data', (d: Buffer) => (out += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await until('the waypoint deployed', () => {
        if (cp.exitCode !== null) throw new Error(`weft control exited with ${cp.exitCode}:\n${out}`);
        return ['Deployment', 'Service', 'ServiceAccount'].every((k) => server.get(k, 'shop', 'waypoint') !== undefined);
      });
      const c = (server.get('Deployment', 'shop', 'waypoint')!.spec as { template: { spec: { containers: { image: string; args: string[] }[] } } }).template.spec.containers[0]!;
      expect(c.image).toBe('weft:test');
      expect(c.args.join(' ')).toContain(`--control-address ${SERVER_NAME}:${tls}`);
      await until('Accepted', () => (server.get('Gateway', 'shop', 'waypoint')?.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions?.some((x) => x.type === 'Accepted' && x.status === 'True') ?? false);
    } catch (e) {
      (e as Error).message += `\n--- weft control output ---\n${out.slice(-8000)}`;
      throw e;
    } finally {
      await stop(cp);
      await server.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
