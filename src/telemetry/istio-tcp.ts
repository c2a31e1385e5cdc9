// Istio's L4 telemetry, with Istio's names and labels, so dashboards and alerts written for
// ztunnel work unchanged. Shared by every proxy (it was the node agent's, src/agent/metrics): a
// connection counts into the series of its facts (workloads, service, identities), not of a proxy.
import { Counter, type Registry } from 'prom-client';
import { formatSpiffe } from '../api/spiffe.ts';
import type { Service, Workload } from '../api/mesh.ts';
import { modelKey, SeriesCache } from './series-cache.ts';

export const TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_canonical_service',
  'source_canonical_revision',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TcpLabels = Record<(typeof TCP_LABELS)[number], string>;

export interface ConnectionFacts {
  reporter: 'source' | 'destination' | 'waypoint';
  src?: Workload;
  /** The authenticated peer (inbound HBONE) or our own identity (outbound). */
  srcPrincipal?: string;
  dst?: Workload;
  dstPrincipal?: string;
  service?: Service;
  mtls: boolean;
}

const U = 'unknown';

/** A label's value, or undefined where Istio writes "unknown". */
export const known = (label: string): string | undefined => (label !== U ? label : undefined);

export function tcpLabels(f: ConnectionFacts, responseFlags = '-'): TcpLabels {
  const principal = (w?: Workload) => (w ? formatSpiffe({ trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount }) : U);
  return {
    reporter: f.reporter,
    source_workload: f.src?.workloadName || U,
    source_workload_namespace: f.src?.namespace || U,
    source_principal: f.srcPrincipal ?? (f.mtls ? principal(f.src) : U),
    source_app: f.src?.canonicalName || U,
    source_version: f.src?.canonicalRevision || U,
    source_canonical_service: f.src?.canonicalName || U,
    source_canonical_revision: f.src?.canonicalRevision || U,
    source_cluster: f.src?.clusterId || U,
    destination_service: f.service?.hostname ?? (f.dst ? (Object.keys(f.dst.services)[0]?.split('/')[1] ?? U) : U),
    destination_service_namespace: f.service?.namespace ?? f.dst?.namespace ?? U,
    destination_service_name: f.service?.name ?? (f.dst ? (Object.keys(f.dst.services)[0]?.split('/')[1]?.split('.')[0] ?? U) : U),
    destination_workload: f.dst?.workloadName || U,
    destination_workload_namespace: f.dst?.namespace || U,
    destination_principal: f.dstPrincipal ?? (f.mtls ? principal(f.dst) : U),
    destination_app: f.dst?.canonicalName || U,
    destination_version: f.dst?.canonicalRevision || U,
    destination_canonical_service: f.dst?.canonicalName || U,
    destination_canonical_revision: f.dst?.canonicalRevision || U,
    destination_cluster: f.dst?.clusterId || U,
    request_protocol: 'tcp',
    response_flags: responseFlags,
    connection_security_policy: f.mtls ? 'mutual_tls' : 'unknown',
  };
}

/** One label set's counts since the last scrape; scrapes hand them to prom-client. */
export class TcpSeries {
  opened = 0;
  closed = 0;
  sent = 0;
  received = 0;
  constructor(readonly labels: TcpLabels) {}
}

type Field = 'opened' | 'closed' | 'sent' | 'received';

/**
 * Istio's four TCP counters. A connection counts into its series with plain additions: the 23
 * labels are built and hashed once per (source, destination, service, identities, flag), not on
 * every increment (prom-client builds a string of all labels each time), and a scrape passes the
 * counts on.
 */
export class IstioTcpMetrics {
  readonly opened: Counter<(typeof TCP_LABELS)[number]>;
  readonly closed: Counter<(typeof TCP_LABELS)[number]>;
  readonly sent: Counter<(typeof TCP_LABELS)[number]>;
  readonly received: Counter<(typeof TCP_LABELS)[number]>;
  private readonly cache = new SeriesCache<TcpLabels, TcpSeries>(TCP_LABELS, (l) => new TcpSeries(l));

  constructor(registry: Registry) {
    const series = this.cache.byLabels;
    const c = (name: string, help: string, field: Field) =>
      new Counter({
        name,
        help,
        labelNames: TCP_LABELS,
        registers: [registry],
        collect() {
          for (const s of series.values())
            if (s[field]) {
              this.inc(s.labels, s[field]);
              s[field] = 0;
            }
        },
      });
    this.opened = c('istio_tcp_connections_opened_total', 'TCP connections opened', 'opened');
    this.closed = c('istio_tcp_connections_closed_total', 'TCP connections closed', 'closed');
    // Istio's sense: "sent" is the response direction (toward the client), "received" the request.
    this.sent = c('istio_tcp_sent_bytes_total', 'Bytes sent during response in TCP connections', 'sent');
    this.received = c('istio_tcp_received_bytes_total', 'Bytes received during request in TCP connections', 'received');
  }

  /** The series a connection with these facts (and response flag) counts into. */
  series(f: ConnectionFacts, responseFlags = '-'): TcpSeries {
    return this.cache.get(`${modelKey(f)}|${responseFlags}`, f, () => tcpLabels(f, responseFlags));
  }
}
