// Waypoints in the lab, end to end: a Gateway of class istio-waypoint becomes a running waypoint
// pod through the same rendering the control plane uses on Kubernetes; traffic of a namespace
// labelled istio.io/use-waypoint goes client → agent → waypoint → agent → server, routed by an
// HTTPRoute; the waypoint's metrics count exactly what was sent; a waypoint for one service
// account takes only that account's traffic; a waypoint for workloads takes traffic to a pod IP,
// and the destination agent refuses a client that skips it. The clients are curl, not weft's own
// (and an HBONE probe for the client that skips the waypoint).
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateAuthority } from '../../src/control/ca/index.ts';
import { createKeyAndCsr } from '../../src/identity/csr.ts';
import { getJson, labName, leftovers, podExec, until, weft } from './helpers.ts';
import { promtoolProblems } from '../telemetry/promtool.ts';

const FIXTURE = new URL('./fixtures/waypoint-app.yaml', import.meta.url).pathname;
const PROBE = new URL('./fixtures/hbone-probe.mjs', import.meta.url).pathname;
const lab = labName('wp');
const tmp = mkdtempSync(join(tmpdir(), 'weft-wp-'));
chmodSync(tmp, 0o755);

type PodJ = { metadata: { name: string; namespace: string; labels?: Record<string, string> }; status: { podIP: string } };
type Obj = { metadata: { name: string; namespace: string; ownerReferences?: { kind: string; name: string }[] }; spec: Record<string, unknown>; status?: Record<string, unknown> };

const waypointPodIP = (ns: string, gateway: string) =>
  getJson<PodJ>(lab, 'pods', ns).find((p) => p.metadata.labels?.['gateway.networking.k8s.io/gateway-name'] === gateway)?.status.podIP;
const waypointMetrics = (ns: string, gateway: string) => {
  const ip = waypointPodIP(ns, gateway);
  if (!ip) throw new Error(`no pod of waypoint ${ns}/${gateway}`);
  return spawnSync('ip', ['netns', 'exec', `${lab}.node-0`, 'curl', '-s', '-m', '5', `http://${ip}:15020/metrics`], { encoding: 'utf8' }).stdout;
};
/** The sum of istio_requests_total{reporter="waypoint"} series whose labels include `match`. */
const requestsTotal = (text: string, match: Record<string, string> = {}) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('istio_requests_total{') && l.includes('reporter="waypoint"') && Object.entries(match).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
const pods = (body: string) => [...body.matchAll(/"pod":"([^"]+)"/g)].map((m) => m[1]!);
const curl = (pod: string, args: string[]) => podExec(lab, pod, ['curl', '-s', '-m', '30', ...args]);

describe('waypoint in the lab', () => {
  beforeAll(async () => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The waypoint's routes arrive over xDS after its pod is ready: wait for the header match to route.
    await until(() => pods(curl('shop/buyer', ['-H', 'x-version: v2', 'http://echo.shop/'])).every((p) => p.startsWith('echo-v2-')), 30_000, 'the HTTPRoute at the waypoint');
  }, 300_000);
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
    expect(leftovers(lab)).toEqual([]);
  });

  it('deploys a waypoint Gateway as istiod does: ServiceAccount, Deployment and Service owned by it, and a Programmed status with the address', () => {
    const owned = (o: Obj) => o.metadata.ownerReferences?.some((r) => r.kind === 'Gateway' && r.name === 'waypoint') === true;
    expect(getJson<Obj>(lab, 'deployments', 'shop').filter(owned).map((d) => d.metadata.name)).toEqual(['waypoint']);
    expect(getJson<Obj>(lab, 'serviceaccounts', 'shop').filter(owned).map((d) => d.metadata.name)).toEqual(['waypoint']);
    const svc = getJson<Obj>(lab, 'services', 'shop').find((s) => s.metadata.name === 'waypoint')!;
    expect(owned(svc)).toBe(true);
    const gw = getJson<Obj>(lab, 'gateways', 'shop').find((g) => g.metadata.name === 'waypoint')!;
    const conditions = (gw.status?.conditions ?? []) as { type: string; status: string }[];
    expect(conditions.find((c) => c.type === 'Programmed')?.status).toBe('True');
    expect(gw.status?.addresses).toEqual([{ type: 'IPAddress', value: svc.spec.clusterIP }]);
    const list = weft(['waypoint', 'list', '-A', '--lab', lab]);
    expect(list.stdout).toMatch(/shop\s+waypoint\s+service\s+<namespace>\s+True/);
    expect(list.stdout).toMatch(/bank\s+teller-waypoint\s+service\s+teller\s+True/);
  });

  it('routes as the HTTPRoute says: a header match, a path match, and 2,000 requests split 90/10 (± 3 %)', () => {
    expect(pods(curl('shop/buyer', ['-H', 'x-version: v2', 'http://echo.shop/a']))[0]).toMatch(/^echo-v2-/);
    expect(pods(curl('shop/buyer', ['http://echo.shop/v2/b']))[0]).toMatch(/^echo-v2-/);
    // One curl, 2,000 requests on one kept-alive connection: the waypoint routes each one.
    const got = pods(podExec(lab, 'shop/buyer', ['curl', '-s', '-m', '120', 'http://echo.shop/split?[1-2000]']));
    expect(got).toHaveLength(2000);
    const v1 = got.filter((p) => p.startsWith('echo-v1-')).length;
    expect(v1 / 2000).toBeGreaterThanOrEqual(0.87);
    expect(v1 / 2000).toBeLessThanOrEqual(0.93);
    expect(got.filter((p) => !p.startsWith('echo-v1-') && !p.startsWith('echo-v2-'))).toEqual([]);
  });

  it('counts exactly the requests sent in istio_requests_total{reporter="waypoint"}, and its exposition is promtool-clean', () => {
    const labels = { destination_service: 'echo.shop.svc.cluster.local', source_workload: 'buyer', response_code: '200' };
    const before = requestsTotal(waypointMetrics('shop', 'waypoint'), labels);
    const n = 137;
    expect(pods(curl('shop/buyer', [`http://echo.shop/count?[1-${n}]`]))).toHaveLength(n);
    const text = waypointMetrics('shop', 'waypoint');
    expect(requestsTotal(text, labels) - before).toBe(n);
    expect(text).toContain('istio_request_duration_milliseconds_bucket{');
    expect(promtoolProblems(text) ?? []).toEqual([]);
  });

  it('a waypoint for one service account takes only that account: teller goes through it, vault (labelled alike) does not', () => {
    const before = requestsTotal(waypointMetrics('bank', 'teller-waypoint'));
    expect(pods(curl('shop/buyer', ['http://teller.bank/']))).toEqual(['teller']);
    expect(pods(curl('shop/buyer', ['http://vault.bank/']))).toEqual(['vault']);
    const text = waypointMetrics('bank', 'teller-waypoint');
    expect(requestsTotal(text) - before).toBe(1);
    expect(requestsTotal(text, { destination_workload: 'teller' }) - before).toBe(1);
    expect(requestsTotal(text, { destination_workload: 'vault' })).toBe(0);
  });

  it('a waypoint for workloads takes traffic to a pod IP; the destination agent refuses a client that skips it', async () => {
    const book = getJson<PodJ>(lab, 'pods', 'ledger').find((p) => p.metadata.name === 'book')!.status.podIP;
    await until(() => waypointPodIP('ledger', 'ledger-waypoint') !== undefined, 60_000, 'the ledger waypoint pod');
    const counted = () => requestsTotal(waypointMetrics('ledger', 'ledger-waypoint'), { destination_workload: 'book' });
    // The waypoint's configuration may still be arriving: the first answer through it is the start.
    const through = () => {
      try {
        return pods(curl('shop/buyer', [`http://${book}:8080/`])).join() === 'book' && counted() > 0;
      } catch {
        return false;
      }
    };
    await until(through, 30_000, 'book through its waypoint');
    const before = counted();
    expect(pods(curl('shop/buyer', [`http://${book}:8080/again?[1-5]`]))).toEqual(Array(5).fill('book'));
    expect(counted() - before).toBe(5);
    // HBONE straight to book's pod with a valid mesh certificate (the shop identity, allowed by no
    // policy to skip anything): book's agent refuses it, naming the waypoint.
    const ca = await CertificateAuthority.create({ source: { type: 'self-signed', dir: `/run/weft/${lab}/control/ca` } });
    const id = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'default' };
    const { keyPem, csrPem } = await createKeyAndCsr(id);
    writeFileSync(join(tmp, 'shop.crt'), (await ca.signWorkload(csrPem, id, 300)).slice(0, -1).join(''));
    writeFileSync(join(tmp, 'shop.key'), keyPem);
    const probe = JSON.parse(podExec(lab, 'plain/outsider', [process.execPath, PROBE, book, `${book}:8080`, join(tmp, 'shop.crt'), join(tmp, 'shop.key')])) as { status?: number; error?: string };
    expect(probe).toEqual({ status: 401 });
  });

  it('removes what a deleted waypoint Gateway owned, and its users reach the service directly again', async () => {
    const r = weft(['delete', '--name', lab, 'gateway', 'teller-waypoint', '-n', 'bank']);
    expect(r.stderr).toBe('');
    await until(() => !getJson<Obj>(lab, 'deployments', 'bank').some((d) => d.metadata.name === 'teller-waypoint'), 30_000, 'the Deployment to go');
    expect(getJson<Obj>(lab, 'services', 'bank').map((s) => s.metadata.name).sort()).toEqual(['teller', 'vault']);
    await until(() => {
      try {
        return pods(curl('shop/buyer', ['http://teller.bank/'])).join() === 'teller';
      } catch {
        return false;
      }
    }, 30_000, 'teller to answer without its waypoint');
  });
});
