// The agent's OTLP copy of its access log (--otlp-logs-endpoint): the shared exporter
// (src/telemetry/otlp-logs.ts), loaded only when configured, with the agent's resource attributes
// and its failures logged at most every 30 s, with what was lost meanwhile.
import type { Logger } from 'pino';
import type { OtlpAccessLogExporter } from '../telemetry/otlp-logs.ts';

/** How long a stopping agent waits for the last records to reach the collector. */
export const ACCESS_LOG_FLUSH_MS = 2_000;
const ERROR_LOG_EVERY_MS = 30_000;

export interface AccessLogExportOptions {
  node: string;
  otlpLogsEndpoint: string;
  otlpLogsHeaders?: string;
  otlpLogsTimeout?: number;
  otlpLogsMaxQueue?: number;
}

export async function startAccessLogExport(o: AccessLogExportOptions, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<OtlpAccessLogExporter> {
  const { OtlpAccessLogExporter, OTLP_LOGS_PATH, parseOtlpHeaders } = await import('../telemetry/otlp-logs.ts');
  let lastLog = 0;
  let failedSince = 0;
  const exporter = new OtlpAccessLogExporter({
    endpoint: o.otlpLogsEndpoint,
    headers: o.otlpLogsHeaders ? parseOtlpHeaders(o.otlpLogsHeaders) : {},
    timeoutMs: o.otlpLogsTimeout,
    maxQueue: o.otlpLogsMaxQueue,
    scope: 'weft.agent.access_log',
    resource: {
      'service.name': 'weft-agent',
      'k8s.node.name': o.node,
      // The DaemonSet gives them (downward API); the lab does not.
      ...(env.POD_NAME ? { 'k8s.pod.name': env.POD_NAME } : {}),
      ...(env.POD_NAMESPACE ? { 'k8s.namespace.name': env.POD_NAMESPACE } : {}),
    },
    onExportError: (err, records) => {
      failedSince += records;
      if (Date.now() - lastLog < ERROR_LOG_EVERY_MS) return;
      lastLog = Date.now();
      log.warn({ endpoint: o.otlpLogsEndpoint, err: err.message, droppedRecords: failedSince, ...exporter.stats() }, 'OTLP access-log export failed; records dropped');
      failedSince = 0;
    },
  });
  const path = new URL(o.otlpLogsEndpoint).pathname;
  if (path !== OTLP_LOGS_PATH) log.warn({ endpoint: o.otlpLogsEndpoint }, `OTLP logs endpoint is used as given: collectors take OTLP/HTTP logs on ${OTLP_LOGS_PATH}`);
  log.info({ endpoint: o.otlpLogsEndpoint, headers: Object.keys(o.otlpLogsHeaders ? parseOtlpHeaders(o.otlpLogsHeaders) : {}) }, 'exporting the access log over OTLP logs');
  return exporter;
}
