// The routes of one service port, resolved: which rules apply in which order (VirtualService order,
// Gateway API precedence, Gateway API over VirtualService), one route per match of the port, and
// destination ports taken from the destination host or reported.
import { describe, expect, it } from 'vitest';
import { DEFAULT_RETRY, portRoutes, rulesFor, type RouteContext } from '../../../../src/control/model/networking/port-routes.ts';
import type { RouteRule, RouteTable } from '../../../../src/control/model/networking/routes.ts';
import type { MeshService } from '../../../../src/control/model/networking/services.ts';

describe('rulesFor', () => {
  const rule = (name: string, rank?: number[]): RouteRule => ({ name, matches: [], destinations: [], ...(rank ? { rank } : {}) }) as RouteRule;
  const table = (api: RouteTable['api'], source: string, rules: RouteRule[], port?: number): RouteTable => ({ api, source, host: 'h', port, rules, order: source });
  it.each<[string, RouteTable[], number, string[]]>([
    ['VirtualService rules keep their order', [table('istio', 'vs1', [rule('b'), rule('a')]), table('istio', 'vs2', [rule('c')])], 80, ['b', 'a', 'c']],
    ['Gateway API rules sort by rank, larger first', [table('gateway', 'r1', [rule('short', [1, 2]), rule('long', [1, 5])])], 80, ['long', 'short']],
    ['rank ties keep object then rule order', [table('gateway', 'r1', [rule('x', [1]), rule('y', [1])]), table('gateway', 'r2', [rule('z', [1])])], 80, ['x', 'y', 'z']],
    ['Gateway API wins over VirtualService', [table('istio', 'vs', [rule('vs')]), table('gateway', 'r', [rule('gw')])], 80, ['gw']],
    ['a route of another port does not count', [table('istio', 'vs', [rule('vs')]), table('gateway', 'r', [rule('gw')], 90)], 80, ['vs']],
  ])('%s', (_name, tables, port, want) => {
    expect(rulesFor(port, tables).map((r) => r.rule.name)).toEqual(want);
  });
});

describe('portRoutes', () => {
  const host = (name: string, ports: number[]): MeshService => ({ host: name, namespace: 'a', ports, endpoints: new Map() });
  const context = () => {
    const problems: string[] = [];
    const ctx: RouteContext = { services: new Map([['one', host('one', [7])], ['two', host('two', [8, 9])]]), problem: (source, reason) => problems.push(`${source}: ${reason}`) };
    return { ctx, problems };
  };
  const table = (rules: RouteRule[]): RouteTable => ({ api: 'istio', source: 'VirtualService/a/vs', host: 'h', rules, order: '' });

  it('sends a port without rules to the whole service, with the mesh retry default', () => {
    const { ctx, problems } = context();
    expect(portRoutes('h', 80, [], ctx)).toEqual([{ name: 'default', match: { headers: [] }, action: { clusters: [{ host: 'h', port: 80, subset: undefined, weight: 1 }], timeoutMs: undefined, retry: { ...DEFAULT_RETRY, perTryTimeoutMs: undefined } } }]);
    expect(problems).toEqual([]);
  });

  it.each<[string, RouteRule['destinations'], string[], string[]]>([
    ['own host: this port', [{ host: 'h', weight: 100 }], ['h:80'], []],
    ['single-port host: its port', [{ host: 'one', weight: 100 }], ['one:7'], []],
    ['explicit port wins', [{ host: 'two', port: 9, weight: 100 }], ['two:9'], []],
    ['several ports: reported, this port used', [{ host: 'two', weight: 100 }], ['two:80'], ['VirtualService/a/vs: destination two needs a port (it has 8, 9); using 80']],
    ['unknown host: reported, this port used', [{ host: 'nope', weight: 100 }], ['nope:80'], ['VirtualService/a/vs: destination nope needs a port (it has no known ports); using 80']],
    ['zero weight left out of a split', [{ host: 'one', weight: 0 }, { host: 'h', subset: 'v1', weight: 100 }], ['h:80/v1'], []],
  ])('destination port: %s', (_name, destinations, want, wantProblems) => {
    const { ctx, problems } = context();
    const [route] = portRoutes('h', 80, [table([{ name: 'r', matches: [], destinations }])], ctx);
    expect(route!.action.clusters.map((c) => `${c.host}:${c.port}${c.subset ? `/${c.subset}` : ''}`)).toEqual(want);
    expect(problems).toEqual(wantProblems);
  });

  it('builds one route per match of this port, and resolves a rule whose matches are all for other ports', () => {
    const { ctx, problems } = context();
    const rules: RouteRule[] = [
      { name: 'other-port', matches: [{ headers: [], port: 90 }], destinations: [{ host: 'two', weight: 100 }] },
      { name: 'both', matches: [{ headers: [], path: { prefix: '/a' } }, { headers: [], path: { exact: '/b' }, port: 80 }], destinations: [{ host: 'h', weight: 100 }], retry: { attempts: 0 }, fault: { abort: { percent: 10, httpStatus: 503 } } },
    ];
    const routes = portRoutes('h', 80, [table(rules)], ctx);
    expect(routes.map((r) => [r.name, r.match.path, r.action.retry, r.fault])).toEqual([
      ['both', { prefix: '/a' }, undefined, { abort: { percent: 10, httpStatus: 503 } }],
      ['both', { exact: '/b' }, undefined, { abort: { percent: 10, httpStatus: 503 } }],
    ]);
    // The rule with no match on this port adds no route, but its destination is still resolved and reported.
    expect(problems).toHaveLength(1);
  });
});
