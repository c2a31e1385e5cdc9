// `weft waypoint apply -o yaml` prints the Gateway istioctl would generate, refusing bad names and
// values before anything is written; `weft waypoint list` shows waypoints and what enrolls in them
// (another namespace's waypoint only through istio.io/use-waypoint-namespace; `none` is no user).
import { Command } from 'commander';
import { parse } from 'yaml';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { listWaypoints, registerWaypointCommands } from '../../src/cli/waypoint.ts';
import type { KObject } from '../../src/kube/objects.ts';

afterEach(() => vi.restoreAllMocks());

async function run(...args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerWaypointCommands(program);
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  vi.spyOn(console, 'error').mockImplementation(() => {});
  await program.parseAsync(['node', 'weft', ...args]);
  return out;
}

describe('weft waypoint apply -o yaml', () => {
  it('prints the waypoint Gateway', async () => {
    expect(parse(await run('waypoint', 'apply', '-n', 'apps', '-o', 'yaml'))).toEqual({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'Gateway',
      metadata: { name: 'waypoint', namespace: 'apps' },
      spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    });
    expect(parse(await run('waypoint', 'apply', '-n', 'apps', '--name', 'reviews-wp', '--for', 'workload', '--service-account', 'reviews', '-o', 'yaml')).metadata).toEqual({
      name: 'reviews-wp',
      namespace: 'apps',
      labels: { 'istio.io/waypoint-for': 'workload' },
      annotations: { 'istio.io/for-service-account': 'reviews' },
    });
  });

  it('refuses what the control plane would refuse, naming the field', async () => {
    await expect(run('waypoint', 'apply', '-n', 'apps', '--name', 'Not_A_Name', '-o', 'yaml')).rejects.toThrow(/metadata\.name/);
    await expect(run('waypoint', 'apply', '-n', 'apps', '--service-account', 'a b', '-o', 'yaml')).rejects.toThrow(/for-service-account/);
    await expect(run('waypoint', 'apply', '-n', 'apps', '--for', 'ingress', '-o', 'yaml')).rejects.toThrow(/ingress/);
    await expect(run('waypoint', 'apply', '-o', 'yaml')).rejects.toThrow(/namespace/);
  });
});

describe('weft waypoint list', () => {
  const obj = (kind: string, name: string, namespace: string | undefined, labels: Record<string, string> = {}, extra: Partial<KObject> = {}): KObject => ({
    apiVersion: 'v1',
    kind,
    metadata: { name, ...(namespace && { namespace }), labels, creationTimestamp: '2026-01-01T00:00:00Z' },
    ...extra,
  });
  const wp = (name: string, namespace: string, labels: Record<string, string> = {}, programmed?: 'True' | 'False') =>
    obj('Gateway', name, namespace, labels, {
      spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
      ...(programmed && { status: { conditions: [{ type: 'Programmed', status: programmed }] } }),
    });
  const st = {
    objects: [
      wp('waypoint', 'apps', {}, 'True'),
      wp('shared', 'infra', { 'istio.io/waypoint-for': 'all' }),
      obj('Gateway', 'ingress', 'apps', {}, { spec: { gatewayClassName: 'istio' } }),
      obj('Namespace', 'apps', undefined, { 'istio.io/use-waypoint': 'waypoint' }),
      obj('Namespace', 'other', undefined, { 'istio.io/use-waypoint': 'waypoint' }), // its own namespace has no waypoint of that name
      obj('ServiceEntry', 'ext', 'apps', { 'istio.io/use-waypoint': 'shared', 'istio.io/use-waypoint-namespace': 'infra' }),
    ],
    services: [obj('Service', 'reviews', 'apps', { 'istio.io/use-waypoint': 'waypoint' }), obj('Service', 'ratings', 'apps', { 'istio.io/use-waypoint': 'none' })],
    pods: [obj('Pod', 'db-0', 'infra', { 'istio.io/use-waypoint': 'shared' })],
  };
  const now = Date.parse('2026-01-01T00:05:00Z');

  it('shows the waypoints of a namespace with their users', () => {
    expect(listWaypoints(st, 'apps', now).split('\n')).toEqual([
      'NAME       FOR       SERVES        PROGRAMMED   AGE   USED BY',
      'waypoint   service   <namespace>   True         5m    Namespace/apps,Service/reviews',
    ]);
  });

  it('all namespaces; a waypoint used from another namespace', () => {
    const lines = listWaypoints(st, undefined, now).split('\n');
    expect(lines[0]).toMatch(/^NAMESPACE\s+NAME\s+FOR/);
    expect(lines[1]).toMatch(/^apps\s+waypoint\s+service/);
    expect(lines[2]).toMatch(/^infra\s+shared\s+all\s+<namespace>\s+Unknown\s+5m\s+Pod\/db-0,ServiceEntry\/apps\/ext$/);
    expect(listWaypoints(st, 'nowhere', now)).toBe('No waypoints found in nowhere namespace.');
  });
});
