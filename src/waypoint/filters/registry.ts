// The filters the waypoint knows, by the type of their typed_config: each compiles its Envoy config
// into a filter (filters/chain.ts), or into nothing when it runs elsewhere (the fault and local
// rate limit filters are per route, the router is the router). A filter the waypoint does not know
// refuses the Listener (a NACK naming it), unless the Listener marks it optional, as Envoy does:
// an unknown security filter silently skipped would be fail open.
import type { Logger } from 'pino';
import type { Msg } from '../xds/envoy.ts';
import { decodeEnvoy } from '../xds/envoy.ts';
import type { HttpFilter, NetworkFilter } from './chain.ts';
import { compileRbacHttp, RBAC_HTTP_TYPE } from './rbac/http.ts';
import { compileRbacNetwork, RBAC_NETWORK_TYPE } from './rbac/network.ts';
import type { ServiceChannels } from './ext-authz/channels.ts';
import { compileExtAuthzFilter } from './ext-authz/filter.ts';
import { compileJwtAuthn, JWT_AUTHN_TYPE } from './jwt.ts';

/** What compiled filters may use at run time (the waypoint provides it; tests their own). */
export interface FilterEnv {
  log?: Logger;
  /** The waypoint's own Gateway and namespace (its own Listener is `waypoint/<ns>/<gateway>`). */
  gateway?: { namespace: string; name: string };
  /** How filters reach the services they call (an external authorizer); the Waypoint fills it once it exists. */
  services?: ServiceChannels;
  /** The endpoints of a cluster in the current routing table (the JWT filter fetches remote JWKS from them). */
  clusterEndpoints?: (cluster: string) => readonly { address: string; port: number }[];
  /** Remote JWKS: extra CAs to trust (PEM, --jwks-ca) and the unknown-kid refetch cooldown (ms). */
  jwks?: { caPem?: string; cooldownMs?: number };
}

export type HttpFilterCompiler = (config: Msg, field: string, env: FilterEnv) => HttpFilter | undefined;
export type NetworkFilterCompiler = (config: Msg, field: string, env: FilterEnv) => NetworkFilter | undefined;

const inert = () => undefined;

/** By typed_config type name; each filter module's compiler is listed here. */
const HTTP_FILTERS = new Map<string, HttpFilterCompiler>([
  ['envoy.extensions.filters.http.fault.v3.HTTPFault', inert],
  ['envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit', inert],
  ['envoy.extensions.filters.http.router.v3.Router', inert],
  [RBAC_HTTP_TYPE, (c, f) => compileRbacHttp(c, f)],
  ['envoy.extensions.filters.http.ext_authz.v3.ExtAuthz', compileExtAuthzFilter],
  [JWT_AUTHN_TYPE, compileJwtAuthn],
]);

const NETWORK_FILTERS = new Map<string, NetworkFilterCompiler>([[RBAC_NETWORK_TYPE, (c, f) => compileRbacNetwork(c, f)]]);

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const typeUrlOf = (any: Msg): string => str(any.typeUrl) ?? str(any.type_url) ?? '';

function compileOne<F>(registry: ReadonlyMap<string, (c: Msg, f: string, e: FilterEnv) => F | undefined>, f: Msg, field: string, env: FilterEnv): F | undefined {
  const name = str(f.name) ?? '';
  const at = `${field} (${name || 'unnamed'})`;
  if (f.disabled === true) return undefined;
  const any = f.typedConfig as Msg | undefined;
  const type = any ? typeUrlOf(any).slice(typeUrlOf(any).lastIndexOf('/') + 1) : '';
  const compile = registry.get(type);
  if (!compile) {
    if (f.isOptional === true) return undefined;
    throw new Error(`${at}: ${type ? `filter type ${type}` : 'a filter without typed_config'} is not supported by the waypoint`);
  }
  let config: Msg;
  try {
    config = decodeEnvoy(type, (any!.value as Uint8Array | undefined) ?? new Uint8Array());
  } catch (e) {
    throw new Error(`${at}: ${type.split('.').pop()} does not decode: ${(e as Error).message}`, { cause: e });
  }
  return compile(config, at, env);
}

/** An HttpConnectionManager's http_filters, compiled in order. */
export function compileHttpFilters(filters: readonly Msg[], field: string, env: FilterEnv): HttpFilter[] {
  return filters.flatMap((f, i) => compileOne(HTTP_FILTERS, f, `${field}[${i}]`, env) ?? []);
}

/** A filter chain's filters before its terminal one, compiled in order. */
export function compileNetworkFilters(filters: readonly Msg[], field: string, env: FilterEnv): NetworkFilter[] {
  return filters.flatMap((f, i) => compileOne(NETWORK_FILTERS, f, `${field}[${i}]`, env) ?? []);
}
