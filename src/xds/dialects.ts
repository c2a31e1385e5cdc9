// The two ADS variants as the client speaks them: what to send to subscribe, ACK, NACK and change a
// subscription, and how a response becomes an update for the handler. Everything else (the stream,
// reconnects, versions held, events) is the same for both and lives in client.ts.
import type { XdsResource, XdsUpdate, XdsWatch } from './types.ts';

/** What the client keeps per watched type URL. */
export interface TypeState {
  watch: XdsWatch;
  names: Set<string> | '*';
  /** name -> version held (what the handler last applied). */
  held: Map<string, string>;
  /** SotW: the version_info last accepted, and the nonce of the latest response on this stream. */
  version: string;
  nonce: string;
  /** The current stream has had the first request of this type. */
  requested: boolean;
}

export interface Dialect {
  method: 'DeltaAggregatedResources' | 'StreamAggregatedResources';
  /** The first request for a type on a new stream. */
  subscribe(t: TypeState, nodeId: string): object;
  /** A response as the handler sees it; throws (a NACK) when it breaks the protocol. */
  read(t: TypeState, r: Record<string, unknown>): XdsUpdate;
  ack(t: TypeState, nonce: string, version: string): object;
  nack(t: TypeState, nonce: string, message: string): object;
  /** The request telling the server `t.names` (which were `before`); undefined when nothing changed. */
  resubscribe(t: TypeState, before: Set<string> | '*'): object | undefined;
  /** SotW: a response carries every subscribed resource of this type. */
  fullState(t: TypeState): boolean;
}

/** google.rpc.Code INVALID_ARGUMENT: what a NACK reports. */
const INVALID_ARGUMENT = 3;

const list = <T>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);
const text = (v: unknown): string => (typeof v === 'string' ? v : '');
const sameNames = (a: Set<string> | '*', b: Set<string> | '*') => (a === '*' || b === '*' ? a === b : a.size === b.size && [...a].every((n) => b.has(n)));

interface DeltaResource {
  name?: string;
  version?: string;
  resource?: { type_url?: string; value?: Uint8Array } | null;
}

export const deltaDialect: Dialect = {
  method: 'DeltaAggregatedResources',
  subscribe: (t, nodeId) => ({
    node: { id: nodeId },
    typeUrl: t.watch.typeUrl,
    resourceNamesSubscribe: t.names === '*' ? ['*'] : [...t.names],
    initialResourceVersions: Object.fromEntries(t.held),
  }),
  // A resource must be named, once, and its Any (when it says) of the watched type: a body of
  // another type may well decode as this one. One not subscribed to is left out, as in SotW.
  read(t, r) {
    const typeUrl = t.watch.typeUrl;
    const seen = new Set<string>();
    const resources: XdsResource[] = [];
    for (const res of list<DeltaResource>(r.resources)) {
      const name = text(res.name);
      if (!name) throw new Error('a resource without a name');
      if (seen.has(name)) throw new Error(`resource ${name}: sent twice`);
      seen.add(name);
      const anyType = text(res.resource?.type_url);
      if (anyType && anyType !== typeUrl) throw new Error(`resource ${name}: of type ${anyType} in a response for ${typeUrl}`);
      if (!res.resource?.value) throw new Error(`resource ${name}: empty`);
      if (t.names === '*' || t.names.has(name)) resources.push({ name, version: text(res.version), body: res.resource.value });
    }
    return { typeUrl: t.watch.typeUrl, version: text(r.systemVersionInfo), resources, removed: list<unknown>(r.removedResources).map(text) };
  },
  ack: (t, nonce) => ({ typeUrl: t.watch.typeUrl, responseNonce: nonce }),
  nack: (t, nonce, message) => ({ typeUrl: t.watch.typeUrl, responseNonce: nonce, errorDetail: { code: INVALID_ARGUMENT, message } }),
  resubscribe(t, before) {
    if (sameNames(before, t.names)) return undefined;
    const after = t.names;
    const subscribe = after === '*' ? ['*'] : [...after].filter((n) => before === '*' || !before.has(n));
    const unsubscribe = before === '*' ? ['*'] : after === '*' ? [] : [...before].filter((n) => !after.has(n));
    return { typeUrl: t.watch.typeUrl, resourceNamesSubscribe: subscribe, resourceNamesUnsubscribe: unsubscribe };
  },
  fullState: () => false,
};

/** Types a SotW server may send one resource at a time (the xDS protocol's "named" types). */
const ONE_AT_A_TIME = new Set(
  ['envoy.config.route.v3.RouteConfiguration', 'envoy.config.endpoint.v3.ClusterLoadAssignment', 'envoy.extensions.transport_sockets.tls.v3.Secret', 'envoy.config.route.v3.VirtualHost'].map(
    (n) => `type.googleapis.com/${n}`,
  ),
);

const fullState = (t: TypeState) => t.watch.fullState ?? !ONE_AT_A_TIME.has(t.watch.typeUrl);
/** resource_names: a wildcard is no names for full-state types (the legacy form every server knows), "*" otherwise. */
const sotwNames = (t: TypeState) => (t.names !== '*' ? [...t.names] : fullState(t) ? [] : ['*']);

export const sotwDialect: Dialect = {
  method: 'StreamAggregatedResources',
  subscribe(t, nodeId) {
    t.nonce = ''; // nonces belong to a stream
    return { node: { id: nodeId }, typeUrl: t.watch.typeUrl, versionInfo: t.version, resourceNames: sotwNames(t), responseNonce: '' };
  },
  read(t, r) {
    const typeUrl = t.watch.typeUrl;
    const version = text(r.versionInfo);
    const seen = new Set<string>();
    const resources: XdsResource[] = [];
    for (const any of list<{ type_url?: string; value?: Uint8Array } | null>(r.resources)) {
      if (any?.type_url !== typeUrl) throw new Error(`a resource of type ${JSON.stringify(any?.type_url ?? '')} in a response for ${typeUrl}`);
      const body = any.value ?? new Uint8Array();
      const name = t.watch.nameOf!(body);
      if (seen.has(name)) throw new Error(`resource ${name}: sent twice`);
      seen.add(name);
      // A resource not asked for is left out: the handler holds only what it subscribed to.
      if (t.names === '*' || t.names.has(name)) resources.push({ name, version, body });
    }
    const removed = fullState(t) ? [...t.held.keys()].filter((n) => !seen.has(n)) : [];
    return { typeUrl, version, resources, removed };
  },
  ack(t, nonce, version) {
    t.nonce = nonce;
    t.version = version;
    return { typeUrl: t.watch.typeUrl, versionInfo: version, responseNonce: nonce, resourceNames: sotwNames(t) };
  },
  nack(t, nonce, message) {
    t.nonce = nonce;
    return { typeUrl: t.watch.typeUrl, versionInfo: t.version, responseNonce: nonce, resourceNames: sotwNames(t), errorDetail: { code: INVALID_ARGUMENT, message } };
  },
  resubscribe(t, before) {
    if (sameNames(before, t.names)) return undefined;
    return { typeUrl: t.watch.typeUrl, versionInfo: t.version, responseNonce: t.nonce, resourceNames: sotwNames(t) };
  },
  fullState,
};
