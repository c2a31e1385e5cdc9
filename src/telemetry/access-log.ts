// The access log: one line per proxied connection when it ends, built from the connection's record
// (connection.ts), never from a proxy's own state, so every proxy writes the same fields.
import type { ConnectionRecord, Transport } from './connection.ts';

/** What the access log writes to: a pino Logger fits. */
export interface AccessLogSink {
  info(entry: object, msg: string): void;
  warn(entry: object, msg: string): void;
}

const PROTOCOL: Record<Transport, string> = { hbone: 'HBONE', tcp: 'TCP', node_local: 'node-local' };

/** The line's fields, in the order they are written. */
export function accessLogEntry(r: ConnectionRecord): Record<string, unknown> {
  return {
    direction: r.direction,
    pod: r.pod,
    'src.addr': r.srcAddr,
    'src.workload': r.srcWorkload?.name,
    'src.namespace': r.srcWorkload?.namespace,
    'src.identity': r.srcIdentity,
    'dst.addr': r.dstAddr,
    'dst.hbone_addr': r.hboneAddr,
    ...(r.transport === 'node_local' ? { node_local: true } : {}),
    'dst.service': r.service?.hostname,
    'dst.workload': r.dstWorkload?.name,
    'dst.namespace': r.dstWorkload?.namespace,
    'dst.identity': r.dstIdentity,
    protocol: PROTOCOL[r.transport],
    bytes_sent: r.sent,
    bytes_recv: r.received,
    duration_ms: r.durationMs,
    ...(r.error ? { error: r.error, response_flags: r.responseFlags } : {}),
    ...(r.policy ? { policy: r.policy } : {}),
    ...(r.audit?.length ? { audit: r.audit } : {}),
  };
}

/** Writes the connection's line: a warning when it failed; the same entry to `also` (an exporter) if given. */
export function logConnection(log: AccessLogSink, r: ConnectionRecord, also?: AccessLogSink): void {
  const entry = accessLogEntry(r);
  if (r.error) {
    log.warn(entry, 'connection failed');
    also?.warn(entry, 'connection failed');
  } else {
    log.info(entry, 'connection complete');
    also?.info(entry, 'connection complete');
  }
}
