// The lab as a small real cluster: 2 nodes, pods on both, services, a spread Deployment, scaling,
// bad input, and a teardown that leaves nothing behind.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curlFrom, getJson, labName, leftovers, podExec, weft } from './helpers.ts';

const FIXTURE = new URL('./fixtures/lab-app.yaml', import.meta.url).pathname;
const lab = labName('e2e');
const tmp = mkdtempSync(join(tmpdir(), 'weft-e2e-'));

type PodJ = { metadata: { name: string; namespace: string; labels?: Record<string, string> }; spec: { nodeName: string }; status: { phase: string; podIP: string } };

const echoPods = () => getJson<PodJ>(lab, 'pods', 'demo').filter((p) => p.metadata.labels?.app === 'echo');

/** Requests through the service until every expected pod answered (bounded). */
function seenReplicas(from: string, url: string, expected: Set<string>, maxTries = 60): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < maxTries && seen.size < expected.size; i++) seen.add(curlFrom(lab, from, url).pod);
  return seen;
}

describe('lab: two-node cluster', () => {
  beforeAll(() => {
    const r = weft(['up', '--name', lab, '--nodes', '2', '-f', FIXTURE]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
  afterAll(() => {
    weft(['down', '--name', lab]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('shows nodes with their addresses and namespaces, pods with IPs and phases', () => {
    const nodes = getJson<{ metadata: { name: string; annotations: Record<string, string> }; status: { addresses: { type: string; address: string }[] } }>(lab, 'nodes');
    expect(nodes.map((n) => n.metadata.name)).toEqual(['node-0', 'node-1']);
    for (const n of nodes) {
      expect(n.status.addresses.find((a) => a.type === 'InternalIP')?.address).toMatch(/^172\.18\.0\.\d+$/);
      expect(n.metadata.annotations['weft.dev/netns']).toBe(`${lab}.${n.metadata.name}`);
    }
    const pods = getJson<PodJ>(lab, 'pods');
    expect(pods).toHaveLength(5);
    for (const p of pods) {
      expect(p.status.phase).toBe('Running');
      expect(p.status.podIP).toMatch(/^10\.244\.[01]\.\d+$/);
    }
    const svc = getJson<{ spec: { clusterIP: string } }>(lab, 'services', 'demo');
    expect(svc[0]!.spec.clusterIP).toMatch(/^10\.96\.\d+\.\d+$/);
    const table = weft(['get', 'pods', '-A', '-o', 'wide', '--name', lab]).stdout;
    expect(table).toMatch(/^NAMESPACE\s+NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE/);
  });

  it('spreads the Deployment over both nodes', () => {
    const pods = echoPods();
    expect(pods).toHaveLength(3);
    expect(new Set(pods.map((p) => p.spec.nodeName))).toEqual(new Set(['node-0', 'node-1']));
    for (const p of pods) expect(p.metadata.name).toMatch(/^echo-[a-z0-9]{10}-[a-z0-9]{5}$/);
  });

  it('routes pod to pod by IP across nodes, without address translation', () => {
    const tester = getJson<PodJ>(lab, 'pods', 'demo').find((p) => p.metadata.name === 'tester')!;
    const target = echoPods().find((p) => p.spec.nodeName === 'node-1')!;
    const r = curlFrom(lab, 'demo/tester', `http://${target.status.podIP}:8080/`);
    expect(r.pod).toBe(target.metadata.name);
    expect(r.client.split(':')[0]).toBe(tester.status.podIP);
  });

  it('reaches a service by short name, namespaced name, full name and ClusterIP', () => {
    const ip = getJson<{ spec: { clusterIP: string } }>(lab, 'services', 'demo')[0]!.spec.clusterIP;
    const names = new Set(echoPods().map((p) => p.metadata.name));
    for (const host of ['echo', 'echo.demo', 'echo.demo.svc.cluster.local', ip]) expect(names.has(curlFrom(lab, 'demo/tester', `http://${host}/`).pod)).toBe(true);
    // From another namespace the short name is not the service, the qualified ones are.
    expect(names.has(curlFrom(lab, 'other/remote', 'http://echo.demo/').pod)).toBe(true);
    expect(() => podExec(lab, 'other/remote', ['curl', '-sf', '-m', '2', 'http://echo/'])).toThrow();
  });

  it('balances service traffic over every replica', () => {
    const names = new Set(echoPods().map((p) => p.metadata.name));
    expect(seenReplicas('other/remote', 'http://echo.demo.svc.cluster.local/', names)).toEqual(names);
  });

  it('runs commands inside the pod: its namespace, hosts file and environment', () => {
    const remote = getJson<PodJ>(lab, 'pods', 'other')[0]!;
    expect(podExec(lab, 'other/remote', ['sh', '-c', 'ip -4 -o addr show dev eth0'])).toContain(remote.status.podIP);
    expect(podExec(lab, 'other/remote', ['cat', '/etc/hosts'])).toMatch(/echo\.demo\.svc\.cluster\.local/);
    expect(podExec(lab, 'other/remote', ['sh', '-c', 'echo $POD_NAME/$POD_NAMESPACE'])).toBe('remote/other\n');
    expect(weft(['exec', '--name', lab, 'other/remote', '--', 'sh', '-c', 'exit 7']).code).toBe(7);
    expect(weft(['logs', '--name', lab, `demo/${echoPods()[0]!.metadata.name}`]).stdout).toContain('echo listening');
  });

  it('scales through apply, and traffic follows', () => {
    const scaled = readFileSync(FIXTURE, 'utf8').replace('replicas: 3', 'replicas: 4');
    writeFileSync(join(tmp, 'scaled.yaml'), scaled);
    const r = weft(['apply', '--name', lab, '-f', join(tmp, 'scaled.yaml')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('deployment/demo/echo configured');
    expect(r.stdout).toContain('pod/demo/tester unchanged');
    let pods = echoPods();
    expect(pods).toHaveLength(4);
    const names = new Set(pods.map((p) => p.metadata.name));
    expect(seenReplicas('demo/tester', 'http://echo/', names, 80)).toEqual(names);

    writeFileSync(join(tmp, 'down.yaml'), scaled.replace('replicas: 4', 'replicas: 1'));
    expect(weft(['apply', '--name', lab, '-f', join(tmp, 'down.yaml')]).code).toBe(0);
    pods = echoPods();
    expect(pods).toHaveLength(1);
    for (let i = 0; i < 5; i++) expect(curlFrom(lab, 'demo/tester', 'http://echo/').pod).toBe(pods[0]!.metadata.name);
  });

  it('applies the valid objects of a bad file and names the invalid one', () => {
    writeFileSync(
      join(tmp, 'mixed.yaml'),
      `apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: demo}\nspec:\n  ports: [{port: 80, targetPort: 0}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: demo}\nspec:\n  containers: [{name: c, image: weft/sleep}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: nowhere}\nspec:\n  containers: [{name: c, image: weft/sleep}]\n`,
    );
    const r = weft(['apply', '--name', lab, '-f', join(tmp, 'mixed.yaml')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${join(tmp, 'mixed.yaml')}: Service demo/broken: spec.ports[0].targetPort: must be`);
    expect(r.stderr).toContain('Pod nowhere/lost: metadata.namespace: namespace "nowhere" not found');
    expect(r.stdout).toContain('pod/demo/extra created');
    expect(getJson<PodJ>(lab, 'pods', 'demo').some((p) => p.metadata.name === 'extra')).toBe(true);
    expect(weft(['delete', '--name', lab, 'pod', 'extra', '-n', 'demo']).stdout).toContain('pod/demo/extra deleted');
  });

  it('refuses a second lab of the same name', () => {
    const r = weft(['up', '--name', lab]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`lab "${lab}" already exists`);
  });

  it('leaves nothing behind after weft down', () => {
    const r = weft(['down', '--name', lab]);
    expect(r.code).toBe(0);
    expect(leftovers(lab)).toEqual([]);
  });
});
