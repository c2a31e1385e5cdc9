// Process health metrics for every weft component: prom-client's defaults, minus the three
// gauges whose `_total` names break Prometheus naming rules (promtool rejects them; the same
// values remain under the names without the suffix).
import { collectDefaultMetrics, type Registry } from 'prom-client';

const MISNAMED = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export function registerHealthMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED) registry.removeSingleMetric(name);
}
