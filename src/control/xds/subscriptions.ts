// What both ADS variants (Delta and State of the World) decide the same way about a client's
// subscription and its answers: which types an empty first request makes a wildcard, how many
// names and types one stream may hold (a hostile or broken client must not grow the server without
// bound), and how a NACK is reported (logged with its reason and what it refused, and counted).
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { TYPE_ENDPOINT, TYPE_ROUTE } from '../../api/envoy.ts';

/**
 * The xDS protocol's named types: a client subscribes to them by name (the names its listeners and
 * clusters give), so an empty subscription means none rather than every resource.
 */
export const NAMED_TYPES: ReadonlySet<string> = new Set([TYPE_ROUTE, TYPE_ENDPOINT]);

/** A first subscription to `typeUrl` with these names is a wildcard: "*" or, for the other types, no names. */
export const isWildcard = (typeUrl: string, names: readonly string[]) => names.includes('*') || (names.length === 0 && !NAMED_TYPES.has(typeUrl));

export interface StreamLimits {
  /** Names one stream may subscribe to, or hold (initial_resource_versions), per type. */
  names: number;
  /** Type URLs one stream may subscribe to. */
  types: number;
  /** Delta: responses of a type awaiting ACK; past this the oldest counts as unanswered (its nonce is then stale). */
  pending: number;
}

/**
 * Large enough for a mesh of tens of thousands of clusters (EDS names), small enough that a
 * stream's subscription stays a bounded share of memory.
 */
export const DEFAULT_LIMITS: StreamLimits = { names: 50_000, types: 32, pending: 64 };

/** Ends the stream it is thrown on with this status (streams.ts). */
export class StreamError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

/** Throws RESOURCE_EXHAUSTED when a type would go over the names limit. */
export function checkNames(limits: StreamLimits, typeUrl: string, count: number, what = 'subscribe to'): void {
  if (count > limits.names) throw new StreamError(grpc.status.RESOURCE_EXHAUSTED, `a stream may ${what} at most ${limits.names} names of type ${typeUrl}; this one asked for ${count}`);
}

/** Throws RESOURCE_EXHAUSTED when a new type would go over the types limit. */
export function checkTypes(limits: StreamLimits, count: number): void {
  if (count > limits.types) throw new StreamError(grpc.status.RESOURCE_EXHAUSTED, `a stream may subscribe to at most ${limits.types} types`);
}

export interface AdsEvents {
  onAck?: (typeUrl: string, node: string) => void;
  onNack?: (typeUrl: string, node: string, reason: string) => void;
  onConnect?: (node: string, connected: number) => void;
}

/** The longest NACK reason kept: it is the client's text, and goes to logs and metrics consumers. */
const MAX_REASON = 2048;

/** Logs and reports a NACK; `rejected` names what the refused response carried. */
export function reportNack(log: Logger, events: AdsEvents, m: { node: string; typeUrl: string; reason: string; rejected: readonly string[] }): void {
  const reason = m.reason.length > MAX_REASON ? `${m.reason.slice(0, MAX_REASON)}… (${m.reason.length} characters)` : m.reason;
  const rejected = m.rejected.length > 20 ? [...m.rejected.slice(0, 20), `… ${m.rejected.length - 20} more`] : m.rejected;
  log.warn({ node: m.node, typeUrl: m.typeUrl, reason, rejected }, 'xds NACK');
  events.onNack?.(m.typeUrl, m.node, reason);
}
