// Retries, timeouts and faults as the control plane writes them into Envoy routes, from
// VirtualService and HTTPRoute, with Istio's translation as the reference: the mesh default retry
// policy (2 retries, 503 retriable, other endpoints preferred), status codes in `retryOn` split out
// into retriable_status_codes, HTTPRoute `retry` and `timeouts`, and the problems of retry
// conditions weft cannot act on.
import { describe, expect, it } from 'vitest';
import type { KObject, Service } from '../../../../src/kube/objects.ts';
import { parseNetworking } from '../../../../src/control/model/networking/config.ts';
import { DEFAULT_MESH } from '../../../../src/control/model/networking/workloads.ts';
import { buildEnvoyResources } from '../../../../src/control/xds/envoy/build.ts';
import { decode, TYPE_ROUTE } from '../../../../src/control/xds/envoy/messages.ts';
import { gateway, istio, NS } from './harness.ts';

const svc: Service = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: NS }, spec: { selector: { app: 'a' }, ports: [{ port: 80 }] } };

type EnvoyRoute = { name: string; route: Record<string, unknown> & { retryPolicy?: Record<string, unknown> }; typedPerFilterConfig?: Record<string, { value: Uint8Array }> };

/** The Envoy routes of a:80 built from these objects; no problems expected. */
function routesOf(...objects: KObject[]): EnvoyRoute[] {
  const built = buildEnvoyResources([svc, ...objects], DEFAULT_MESH);
  expect(built.problems).toEqual([]);
  const rc = decode(TYPE_ROUTE, built.resources.get(TYPE_ROUTE)!.get(`a.${NS}.svc.cluster.local:80`)!) as { virtualHosts: { routes: EnvoyRoute[] }[] };
  return rc.virtualHosts[0]!.routes;
}

const vs = (http: object) => istio('VirtualService', 'vs', { hosts: ['a'], http: [{ name: 'r', route: [{ destination: { host: 'a' } }], ...http }] });
const httpRoute = (rule: object) => gateway('HTTPRoute', 'hr', { parentRefs: [{ group: '', kind: 'Service', name: 'a', port: 80 }], rules: [{ backendRefs: [{ name: 'a', port: 80 }], ...rule }] });
const PREVIOUS_HOSTS = { name: 'envoy.retry_host_predicates.previous_hosts', configType: 'typedConfig', typedConfig: { type_url: 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate' } };

describe('retries, timeouts and faults in Envoy routes', () => {
  it('gives a route with no retries Istio mesh default: 2 retries on connect failures, refused streams, gRPC unavailable/cancelled and 503', () => {
    const [r] = routesOf(vs({}));
    expect(r!.route.retryPolicy).toEqual({
      retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
      numRetries: { value: 2 },
      retriableStatusCodes: [503],
      retryHostPredicate: [PREVIOUS_HOSTS],
      hostSelectionRetryMaxAttempts: 5,
    });
    // The default route of a port without rules carries it too.
    expect(routesOf()[0]!.route.retryPolicy).toMatchObject({ numRetries: { value: 2 }, retriableStatusCodes: [503] });
  });

  it('writes VirtualService retries as Istio does: codes out of retryOn, per-try timeout, backoff, previous hosts off on request', () => {
    const [r] = routesOf(vs({ retries: { attempts: 3, retryOn: 'gateway-error,409, 500', perTryTimeout: '250ms', backoff: '10ms', retryIgnorePreviousHosts: false }, timeout: '2s' }));
    expect(r!.route.retryPolicy).toEqual({
      retryOn: 'gateway-error,retriable-status-codes',
      numRetries: { value: 3 },
      retriableStatusCodes: [409, 500],
      perTryTimeout: { nanos: 250_000_000 },
      retryBackOff: { baseInterval: { nanos: 10_000_000 } },
    });
    expect(r!.route.timeout).toEqual({ seconds: 2 });
    // Attempts alone keep the default conditions and 503; attempts 0, or absent (Istio's 0), turn retries off.
    expect(routesOf(vs({ retries: { attempts: 5 } }))[0]!.route.retryPolicy).toMatchObject({ retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes', numRetries: { value: 5 }, retriableStatusCodes: [503] });
    expect(routesOf(vs({ retries: { attempts: 0 } }))[0]!.route.retryPolicy).toBeUndefined();
    expect(routesOf(vs({ retries: { perTryTimeout: '1s' } }))[0]!.route.retryPolicy).toBeUndefined();
  });

  it('translates HTTPRoute retry (codes, attempts, backoff) and timeouts (request, backendRequest) as Istio does', () => {
    const [r] = routesOf(httpRoute({ retry: { codes: [500, 502], attempts: 4, backoff: '50ms' }, timeouts: { request: '3s', backendRequest: '1s' } }));
    expect(r!.route.retryPolicy).toEqual({
      retryOn: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
      numRetries: { value: 4 },
      retriableStatusCodes: [500, 502],
      perTryTimeout: { seconds: 1 },
      retryBackOff: { baseInterval: { nanos: 50_000_000 } },
      retryHostPredicate: [PREVIOUS_HOSTS],
      hostSelectionRetryMaxAttempts: 5,
    });
    expect(r!.route.timeout).toEqual({ seconds: 3 });
    // No codes: connection failures only, 2 attempts.
    expect(routesOf(httpRoute({ retry: {} }))[0]!.route.retryPolicy).toMatchObject({ retryOn: 'connect-failure,refused-stream,unavailable,cancelled', numRetries: { value: 2 } });
    expect(routesOf(httpRoute({ retry: {} }))[0]!.route.retryPolicy!.retriableStatusCodes).toBeUndefined();
    expect(routesOf(httpRoute({ retry: { attempts: 0, codes: [503] } }))[0]!.route.retryPolicy).toBeUndefined();
    // Without a retry stanza, backendRequest is the route timeout and the mesh default retries stay.
    const [plain] = routesOf(httpRoute({ timeouts: { request: '3s', backendRequest: '500ms' } }));
    expect(plain!.route.timeout).toEqual({ nanos: 500_000_000 });
    expect(plain!.route.retryPolicy).toMatchObject({ numRetries: { value: 2 }, retriableStatusCodes: [503] });
    expect(plain!.route.retryPolicy!.perTryTimeout).toBeUndefined();
  });

  it('writes a VirtualService fault as an HTTPFault per route, percentages per million', () => {
    const [r] = routesOf(vs({ fault: { delay: { fixedDelay: '200ms', percentage: { value: 12.5 } }, abort: { httpStatus: 418, percentage: { value: 50 } } } }));
    const any = r!.typedPerFilterConfig!['envoy.filters.http.fault']!;
    expect(decode('envoy.extensions.filters.http.fault.v3.HTTPFault', any.value)).toMatchObject({
      delay: { fixedDelay: { nanos: 200_000_000 }, percentage: { numerator: 125_000, denominator: 'MILLION' } },
      abort: { httpStatus: 418, percentage: { numerator: 500_000, denominator: 'MILLION' } },
    });
  });

  it('reports retry conditions and fields it cannot act on, naming the field', () => {
    const problems = (o: KObject) => parseNetworking([svc, o], DEFAULT_MESH).problems.map((p) => `${p.kind}/${p.name}: ${p.field}: ${p.reason}`);
    expect(problems(vs({ retries: { attempts: 2, retryOn: '5xx,retriable-headers' } }))).toEqual(['VirtualService/vs: spec.http[0].retries.retryOn: retry condition retriable-headers is not supported by weft']);
    expect(problems(vs({ retries: { attempts: 2, retryOn: '5xx,sometimes' } }))[0]).toMatch(/spec\.http\[0\]\.retries\.retryOn: unknown retry condition "sometimes"/);
    expect(problems(vs({ retries: { attempts: 2, retryOn: '999' } }))[0]).toMatch(/999 is not an HTTP status code/);
    expect(problems(vs({ retries: { attempts: 2, backoff: 'soon' } }))[0]).toMatch(/spec\.http\[0\]\.retries\.backoff: invalid duration/);
    expect(problems(vs({ retries: { attempts: 2, retryRemoteLocalities: true } }))).toEqual(['VirtualService/vs: spec.http[0].retries.retryRemoteLocalities: weft has no localities: ignored']);
    expect(problems(httpRoute({ retry: { codes: [200] } }))[0]).toMatch(/HTTPRoute\/hr: spec\.rules\[0\]\.retry\.codes\[0\]: expected an integer in \[400, 599\]/);
    expect(problems(httpRoute({ retry: { budget: 1 } }))[0]).toMatch(/spec\.rules\[0\]\.retry\.budget/);
  });
});
