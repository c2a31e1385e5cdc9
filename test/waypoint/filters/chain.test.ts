import { describe, expect, it } from 'vitest';
import { mergeFilters, runHttpFilters, STAGE, type FilterRequest, type HttpFilter } from '../../../src/waypoint/filters/chain.ts';
import { compileListener } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy, TYPE_LISTENER } from '../../../src/waypoint/xds/envoy.ts';
import { any, encode } from '../../../src/control/xds/envoy/messages.ts';
import { anyMessage } from '../../../src/api/protos.ts';
import { buildGatewayListener, buildListener } from '../../../src/control/xds/envoy/listeners.ts';

const LISTENER = 'envoy.config.listener.v3.Listener';
const HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** A filter that records its run and merges with another of its stage when `mergeable`. */
const filter = (name: string, stage: number, log: string[], mergeable = false): HttpFilter => ({
  name,
  stage,
  ...(mergeable && { merge: (o: HttpFilter) => (o.stage === stage ? filter(`${name}+${o.name}`, stage, log, true) : undefined) }),
  decode: () => void log.push(name),
});

describe('listener filters', () => {
  it('refuses a listener naming a filter the waypoint does not know, unless it is optional', () => {
    const withFilter = (isOptional: boolean) =>
      decodeEnvoy(TYPE_LISTENER, encode(LISTENER, {
        name: 'web:80',
        apiListener: { apiListener: any(HCM, { statPrefix: 'x', rds: { routeConfigName: 'web:80', configSource: { ads: {} } }, httpFilters: [{ name: 'envoy.filters.http.lua', isOptional, typedConfig: anyMessage('type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua', new Uint8Array()) }] }) },
      }));
    expect(() => compileListener(withFilter(false))).toThrow(/Listener web:80: http_filters\[0\] \(envoy\.filters\.http\.lua\): filter type envoy\.extensions\.filters\.http\.lua\.v3\.Lua is not supported/);
    expect(compileListener(withFilter(true)).filters.http).toEqual([]);
  });

  it('reads a waypoint\'s own listener as filters only', () => {
    const l = compileListener(decodeEnvoy(TYPE_LISTENER, buildGatewayListener('ns', 'wp', { httpFilters: [], networkFilters: [] })));
    expect(l).toMatchObject({ name: 'waypoint/ns/wp', gateway: true, filters: { http: [], network: [] } });
    expect(compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 80, 'http'))).gateway).toBeUndefined();
  });

  it('merges the waypoint\'s own filters with a port\'s in Istio\'s order, one filter per mergeable kind', async () => {
    const log: string[] = [];
    const own = { http: [filter('jwt', STAGE.authn, log), filter('allow-gw', STAGE.allow, log, true)], network: [] };
    const port = { http: [filter('allow-svc', STAGE.allow, log, true), filter('deny-svc', STAGE.deny, log), filter('custom', STAGE.custom, log)], network: [] };
    const merged = mergeFilters(own, port);
    expect(merged.http.map((f) => f.name)).toEqual(['jwt', 'custom', 'deny-svc', 'allow-gw+allow-svc']);
    await runHttpFilters(merged.http, {} as FilterRequest);
    expect(log).toEqual(['jwt', 'custom', 'deny-svc', 'allow-gw+allow-svc']);
    expect(own.http.map((f) => f.name)).toEqual(['jwt', 'allow-gw']); // inputs unchanged
  });

  it('stops at the first local answer', async () => {
    const log: string[] = [];
    const deny: HttpFilter = { name: 'deny', stage: STAGE.deny, decode: () => ({ status: 403, body: 'RBAC: access denied', flags: 'RBAC', details: 'rbac_access_denied' }) };
    const reply = await runHttpFilters([deny, filter('after', STAGE.allow, log)], {} as FilterRequest);
    expect(reply?.status).toBe(403);
    expect(log).toEqual([]);
  });
});
