// `weft waypoint run`: the waypoint process (src/waypoint/main.ts). A subcommand of `weft waypoint`,
// whose other subcommands (apply, list) live in waypoint.ts; this only adds `run` to that parent.
import type { Command } from 'commander';
import type { WaypointRunOptions } from '../waypoint/main.ts';

/** The `weft waypoint` parent command's description (main.ts registers it alone for `run`). */
export const WAYPOINT_DESCRIPTION = 'waypoints (L7 proxies of a namespace or service account): apply, list, run';

export function registerWaypointRun(waypoint: Command): void {
  waypoint
    .command('run')
    .description('run a waypoint: its certificate from the mesh CA, routes from the control plane, HBONE on --mesh-address, Istio request metrics')
    .requiredOption('--control-address <host:port>', 'the control plane: xDS over TLS (and the CA unless --ca-address)')
    .option('--ca-address <host:port>', 'the mesh CA (default: --control-address)')
    .option('--control-server-name <name>', "name in the control plane's certificate", 'weft-control.istio-system.svc')
    .requiredOption('--root-cert <file>', 'the mesh root (PEM)')
    .option('--token-file <file>', "the waypoint's service-account token for the CA (audience istio-ca), re-read per use")
    .option('--cert <file>', 'instead of the CA: certificate chain (PEM, leaf first, one SPIFFE URI SAN)')
    .option('--key <file>', 'instead of the CA: its private key (PEM)')
    .option('--trust-domain <td>', 'SPIFFE trust domain', 'cluster.local')
    .option('--namespace <ns>', "the waypoint's namespace (default: POD_NAMESPACE)")
    .option('--service-account <sa>', "the waypoint's service account (default: SERVICE_ACCOUNT)")
    .option('--gateway <name>', "the waypoint's Gateway: what targets it applies here (default: ISTIO_META_WORKLOAD_NAME)")
    .option('--waypoint-for <kind>', 'service, workload, all or none (istio.io/waypoint-for; the control plane routes accordingly)', 'service')
    .option('--for-service-account <sa>', 'the one service account this waypoint serves (istio.io/for-service-account)')
    .option('--mesh-address <addr>', 'HBONE listener', '0.0.0.0:15008')
    .option('--status-address <addr>', 'readiness: /healthz/ready', '0.0.0.0:15021')
    .option('--metrics-address <addr>', '/metrics and /stats/prometheus', '0.0.0.0:15020')
    .option('--jwks-ca <file>', 'CA bundle (PEM) trusted for RequestAuthentication jwksUri servers, besides the system CAs and NODE_EXTRA_CA_CERTS (default: JWKS_CA_CERTS)')
    .option('--drain-deadline <seconds>', 'on SIGTERM, how long open connections may finish before what is left is closed; 0: no deadline (default: WEFT_DRAIN_DEADLINE, else 30)')
    .action(async (o: WaypointRunOptions) => {
      // No source maps in the waypoint (bin/weft.js enables them for every command), as in the
      // agent: Node would keep the map of every module loaded from here on (one per file of
      // @grpc/grpc-js) and decode them whole into arrays the first time an error's stack is read.
      // Stack traces name lib/ bundle lines instead (unminified, with the functions' names).
      process.setSourceMapsEnabled(false);
      const { runWaypoint } = await import('../waypoint/main.ts'); // loaded only when run
      await runWaypoint(o);
    });
}
