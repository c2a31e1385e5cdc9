// What a proxy knows about one connection when it ends: the small record the access log (and any
// other consumer) takes, the same whether the node agent or the waypoint carried the connection.
import type { Service, Workload } from '../api/mesh.ts';

export type Direction = 'outbound' | 'inbound';
/** How a connection crossed the mesh: HBONE, plaintext TCP, or the node-local fast path. */
export type Transport = 'hbone' | 'tcp' | 'node_local';

export interface ConnectionRecord {
  direction: Direction;
  /** The local workload the connection was proxied for, "namespace/name". */
  pod: string;
  /** The client's address, "host:port". */
  srcAddr: string;
  srcWorkload?: Workload;
  /** SPIFFE ids as Istio's metrics label them; undefined where unknown. */
  srcIdentity?: string;
  /** Where the client was going (its original destination, or the CONNECT authority). */
  dstAddr?: string;
  /** The HBONE peer the connection was carried to, "host:15008". */
  hboneAddr?: string;
  service?: Service;
  dstWorkload?: Workload;
  dstIdentity?: string;
  transport: Transport;
  /** Bytes from the client toward the destination, and back. */
  sent: number;
  received: number;
  durationMs: number;
  error?: string;
  /** Istio response flag: DENY, CONNECT (upstream connect failure), TLS_FAILURE, NR (no route). */
  responseFlags?: string;
  /** The deciding authorization policy, if any. */
  policy?: string;
  /** Matching AUDIT policies. */
  audit?: string[];
}

/** Milliseconds since `start` (process.hrtime.bigint()), to 10 µs. */
export const elapsedMs = (start: bigint): number => Math.round(Number(process.hrtime.bigint() - start) / 1e4) / 100;
