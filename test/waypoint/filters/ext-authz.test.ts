// The ext_authz filter's config as the waypoint compiles it from a Listener: Istio's
// filter_enabled_metadata gate (the authorizer is asked only for requests the CUSTOM policy's
// shadow rules matched), fields it cannot enforce refused by name, and the bound on calls in flight.
import { describe, expect, it } from 'vitest';
import type { FilterRequest, HttpFilter } from '../../../src/waypoint/filters/chain.ts';
import { ServiceChannels } from '../../../src/waypoint/filters/ext-authz/channels.ts';
import { compileListener } from '../../../src/waypoint/xds/compile.ts';
import { decodeEnvoy, TYPE_LISTENER } from '../../../src/waypoint/xds/envoy.ts';
import { any, duration } from '../../../src/control/xds/envoy/messages.ts';
import { buildListener } from '../../../src/control/xds/envoy/listeners.ts';
import { HbonePool } from '../../../src/hbone/pool.ts';
import { H2Sessions } from '../../../src/waypoint/upstream/h2-sessions.ts';
import { MeshIndex } from '../../../src/waypoint/mesh.ts';
import { EMPTY_TABLE, type RoutingTable } from '../../../src/waypoint/router/table.ts';

const EXT_AUTHZ = 'envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
const CLUSTER = 'outbound|9000||ext-authz.foo.svc.cluster.local';

/** istiod's generateFilterMatcher: the RBAC shadow engine's effective policy id starts with istio-ext-authz. */
const ISTIO_GATE = {
  filter: 'envoy.filters.http.rbac',
  path: [{ key: 'istio_ext_authz_shadow_effective_policy_id' }],
  value: { stringMatch: { prefix: 'istio-ext-authz' } },
};

const compile = (config: Record<string, unknown>): HttpFilter[] =>
  compileListener(decodeEnvoy(TYPE_LISTENER, buildListener('web', 80, 'http', { httpFilters: [{ name: 'envoy.filters.http.ext_authz', typedConfig: any(EXT_AUTHZ, config) }], networkFilters: [] }))).filters.http as HttpFilter[];

const grpcConfig = (extra: object = {}) => ({ grpcService: { envoyGrpc: { clusterName: CLUSTER }, timeout: duration(500) }, transportApiVersion: 'V3', ...extra });

const request = (metadata: Map<string, Record<string, unknown>> = new Map()): FilterRequest => ({
  method: 'GET', url: '/', path: '/', host: 'web', scheme: 'http', protocol: 'HTTP/1.1', headers: {}, peerPrincipal: 'cluster.local/ns/foo/sa/client',
  peerIp: '10.0.0.1', peerAddress: '10.0.0.1:1234', destination: '10.96.0.1:80', grpc: false, metadata,
});

describe('ext_authz config', () => {
  it('asks the authorizer only when the CUSTOM policy matched (filter_enabled_metadata), and fails closed when it cannot', async () => {
    const [f] = compile(grpcConfig({ filterEnabledMetadata: ISTIO_GATE }));
    expect(f!.name).toBe('envoy.filters.http.ext_authz');
    // No shadow result, or another policy's: the authorizer is not asked, the request goes on.
    expect(await f!.decode(request())).toBeUndefined();
    const other = new Map([['envoy.filters.http.rbac', { istio_ext_authz_shadow_effective_policy_id: 'ns[foo]-policy[x]-rule[0]', istio_ext_authz_shadow_engine_result: 'denied' }]]);
    expect(await f!.decode(request(other))).toBeUndefined();
    // The CUSTOM policy matched: the authorizer is asked; none is reachable here (no channels), so 403 UAEX.
    const matched = new Map([['envoy.filters.http.rbac', { istio_ext_authz_shadow_effective_policy_id: 'istio-ext-authz-ns[foo]-policy[ext]-rule[0]', istio_ext_authz_shadow_engine_result: 'allowed' }]]);
    expect(await f!.decode(request(matched))).toEqual({ status: 403, body: '', flags: 'UAEX', details: 'ext_authz_error' });
    // status_on_error is honoured, failure_mode_allow lets it through.
    expect(await compile(grpcConfig({ statusOnError: { code: 503 } }))[0]!.decode(request())).toMatchObject({ status: 503, flags: 'UAEX' });
    expect(await compile(grpcConfig({ failureModeAllow: true }))[0]!.decode(request())).toBeUndefined();
  });

  it('refuses what it does not enforce, naming the field', () => {
    const refused: [Record<string, unknown>, RegExp][] = [
      [grpcConfig({ includeTlsSession: true }), /http_filters\[0\] \(envoy.filters.http.ext_authz\).include_tls_session: not supported/],
      [grpcConfig({ withRequestBody: { allowPartialMessage: true } }), /with_request_body.max_request_bytes: must be above 0/],
      [grpcConfig({ includePeerCertificate: true }), /include_peer_certificate: not supported/],
      [grpcConfig({ transportApiVersion: 'V2' }), /transport_api_version: V2 is not supported/],
      [grpcConfig({ metadataContextNamespaces: ['x'] }), /metadata_context_namespaces: not supported/],
      [{ grpcService: { googleGrpc: { targetUri: 'x', statPrefix: 'y' } } }, /grpc_service.google_grpc: not supported|only envoy_grpc/],
      [{ httpService: { serverUri: { uri: 'http://x', cluster: CLUSTER, timeout: duration(1) }, authorizationResponse: { dynamicMetadataFromHeaders: { patterns: [{ exact: 'x' }] } } } }, /authorization_response.dynamic_metadata_from_headers: not supported/],
      [grpcConfig({ filterEnabledMetadata: { ...ISTIO_GATE, value: { doubleMatch: { exact: 1 } } } }), /filter_enabled_metadata.value: only string_match/],
      [grpcConfig({ allowedHeaders: { patterns: [{ safeRegex: { regex: '(a+)+' } }] } }), /allowed_headers.patterns\[0\].safe_regex: refused/],
      [{}, /neither grpc_service nor http_service/],
    ];
    for (const [config, why] of refused) expect(() => compile(config), JSON.stringify(config)).toThrow(why);
  });

  it('bounds the calls in flight per cluster: past the bound a call fails at once', () => {
    const table: RoutingTable = {
      ...EMPTY_TABLE,
      clusters: new Map([[CLUSTER, { name: CLUSTER, edsName: CLUSTER }]]),
      endpoints: new Map([[CLUSTER, [{ address: '10.0.0.9', port: 9000 }]]]),
    };
    const pool = new HbonePool();
    const upstream = { pool, credentials: () => { throw new Error('unused'); }, identity: 'spiffe://cluster.local/ns/foo/sa/waypoint' };
    const channels = new ServiceChannels({ table: () => table, mesh: () => new MeshIndex(), upstream, h2: new H2Sessions(upstream), maxInFlight: 2 });
    const a = channels.acquire(CLUSTER);
    const b = channels.acquire(CLUSTER);
    expect(() => channels.acquire(CLUSTER)).toThrow(/too many calls in flight/);
    a.release();
    a.release(); // twice is once
    const c = channels.acquire(CLUSTER);
    expect(() => channels.acquire(CLUSTER)).toThrow(/too many calls in flight/);
    b.release();
    c.release();
    expect(() => channels.acquire('outbound|1||nowhere')).toThrow(/not found/);
    expect(c.target).toMatchObject({ endpoint: { address: '10.0.0.9', port: 9000 }, http2: false });
    expect(c.target.identity).toBeUndefined();
    channels.close();
    pool.close(true);
  });
});
