// The filters a Listener names (Envoy's http_filters and network filters), compiled
// (filters/registry.ts) and run before routing: JWT authentication, external authorization,
// RBAC... Each filter reads and may change the request's facts and shared state (the
// authenticated request principal, Envoy's dynamic metadata), and either lets it go on or answers
// it locally. They run in the Listener's order; the first local answer ends the chain, as in Envoy.
//
// A waypoint merges its own Listener's filters (what targets its Gateway) with the port's (what
// targets the Service): mergeFilters, per filter kind, so that e.g. the ALLOW policies of both are
// one set rather than two filters each requiring a match.
import type { IncomingHttpHeaders } from 'node:http';
import type { Service } from '../../api/mesh.ts';

/** What a JWT filter established about the request (Istio's request.auth.* attributes). */
export interface RequestAuth {
  /** `iss/sub`: Istio's request principal. */
  principal: string;
  audiences: string[];
  /** The `azp` claim. */
  presenter?: string;
  claims: Record<string, unknown>;
}

/** One HTTP request as the filters see it; header names are lower case. */
export interface FilterRequest {
  readonly method: string;
  /** The request target as received (path and query). */
  readonly url: string;
  /** The path without the query. */
  readonly path: string;
  readonly host: string;
  readonly scheme: string;
  readonly protocol: string;
  /** Filters may add or remove headers (JWT outputs, an authorizer's headers): the router sends what is here. */
  headers: IncomingHttpHeaders;
  /** The HBONE peer: the original client's identity (SPIFFE id without the scheme) and address. */
  readonly peerPrincipal: string;
  readonly peerIp: string;
  readonly peerAddress: string;
  /** The CONNECT authority `ip:port` the client addressed. */
  readonly destination: string;
  /** The service addressed, if the client addressed one (not a workload). */
  readonly service?: Service;
  readonly grpc: boolean;
  /** Set by an authentication filter when a token was verified. */
  auth?: RequestAuth;
  /** Envoy's dynamic metadata, by filter namespace (e.g. RBAC's shadow result enabling ext_authz). */
  readonly metadata: Map<string, Record<string, unknown>>;
  /** Headers a filter adds to the response the client gets (e.g. from an authorizer's OK). */
  responseHeaders?: Record<string, string>;
  /** Aborted when the client goes away: a filter waiting on a call (an authorizer) gives it up. */
  readonly signal?: AbortSignal;
  /**
   * Up to `max` bytes of the request body, waited for (ext_authz's with_request_body); the router
   * still sends the whole body. `complete`: the body ended within them.
   */
  readonly body?: (max: number) => Promise<{ bytes: Buffer; complete: boolean }>;
}

/** A local answer instead of routing. `details` is Envoy's response_code_details (the access log's). */
export interface FilterReply {
  status: number;
  body: string;
  /** Envoy's response flag for it (e.g. RBAC, UAEX), '-' for none. */
  flags: string;
  details: string;
  headers?: Record<string, string>;
  /** The policy that decided, for the access log: the one that denied, or the ALLOW policies none of which matched. */
  policy?: string;
}

/**
 * Where a filter kind runs, istiod's order: authentication, the CUSTOM action's authorizer (its
 * RBAC shadow rules first), RBAC AUDIT (it never denies, so it sees every request), DENY, ALLOW,
 * then the rest. Merging keeps it.
 */
export const STAGE = { authn: 0, customMatch: 1, custom: 2, audit: 3, deny: 4, allow: 5, other: 6 } as const;

export interface HttpFilter {
  /** The Envoy filter name, for problems and logs. */
  readonly name: string;
  readonly stage: number;
  /** Merges another filter of the same kind into one (mergeFilters); absent: both run, in order. */
  merge?(other: HttpFilter): HttpFilter | undefined;
  decode(r: FilterRequest): FilterReply | undefined | Promise<FilterReply | undefined>;
}

/** A TCP connection as the network filters see it, at CONNECT, before anything is dialled. */
export interface ConnectionFacts {
  readonly peerPrincipal: string;
  readonly peerIp: string;
  readonly peerAddress: string;
  readonly destination: string;
  readonly destinationIp: string;
  readonly port: number;
  readonly service?: Service;
}

/** A refused connection: the CONNECT's 401 (as ztunnel answers), with the reason and policy for the log. */
export interface ConnectionRefusal {
  reason: string;
  policy?: string;
  flags: string;
}

export interface NetworkFilter {
  readonly name: string;
  readonly stage: number;
  merge?(other: NetworkFilter): NetworkFilter | undefined;
  onConnect(c: ConnectionFacts): ConnectionRefusal | undefined;
}

/** A Listener's compiled filters, in its order (the router and filters run per route are not here). */
export interface ListenerFilters {
  http: readonly HttpFilter[];
  network: readonly NetworkFilter[];
}

export const NO_FILTERS: ListenerFilters = { http: [], network: [] };

/** Runs the HTTP filters in order; the first local answer ends the chain. */
export async function runHttpFilters(filters: readonly HttpFilter[], r: FilterRequest): Promise<FilterReply | undefined> {
  for (const f of filters) {
    const reply = await f.decode(r);
    if (reply) return reply;
  }
  return undefined;
}

/** Runs the network filters in order; the first refusal ends the chain. */
export function runNetworkFilters(filters: readonly NetworkFilter[], c: ConnectionFacts): ConnectionRefusal | undefined {
  for (const f of filters) {
    const refused = f.onConnect(c);
    if (refused) return refused;
  }
  return undefined;
}

/**
 * The waypoint's own filters with a port's: each of the port's filters is merged into the first
 * own filter that accepts it (same kind and action), else inserted after the last filter of its
 * stage or an earlier one, so the chain keeps Istio's order. Neither list is changed.
 */
export function mergeFilters(own: ListenerFilters, port: ListenerFilters): ListenerFilters {
  if (own === NO_FILTERS || (!own.http.length && !own.network.length)) return port;
  if (port === NO_FILTERS || (!port.http.length && !port.network.length)) return own;
  return { http: mergeList(own.http, port.http), network: mergeList(own.network, port.network) };
}

function mergeList<F extends { stage: number; merge?(o: F): F | undefined }>(own: readonly F[], port: readonly F[]): F[] {
  const out = [...own];
  for (const f of port) {
    let merged: F | undefined;
    const i = out.findIndex((o) => (merged = o.merge?.(f)) !== undefined);
    if (i >= 0) {
      out[i] = merged!;
      continue;
    }
    let at = 0;
    out.forEach((o, j) => (o.stage <= f.stage ? (at = j + 1) : undefined));
    out.splice(at, 0, f);
  }
  return out;
}
