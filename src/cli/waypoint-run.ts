// `weft waypoint run`: the waypoint process (src/waypoint/main.ts). A subcommand of `weft waypoint`,
// whose other subcommands (apply, list) live in waypoint.ts; this only adds `run` to that parent.
import type { Command } from 'commander';
import type { WaypointRunOptions } from '../waypoint/main.ts';

export function registerWaypointRun(waypoint: Command): void {
  waypoint
    .command('run')
    .description('run a waypoint: HBONE on --listen, routes from the control plane, Istio request metrics')
    .requiredOption('--cert <file>', "the waypoint's certificate chain (PEM, leaf first, one SPIFFE URI SAN)")
    .requiredOption('--key <file>', 'its private key (PEM)')
    .requiredOption('--root <file>', 'the mesh root (PEM)')
    .requiredOption('--xds-address <addr>', 'the control plane, host:port')
    .option('--xds-server-name <dns>', "TLS to the control plane, checking this name against the mesh root's chain (plaintext when absent)")
    .option('--token-file <file>', 'credential sent to the control plane (Bearer), re-read per connection')
    .option('--listen <addr>', 'HBONE listener', '0.0.0.0:15008')
    .option('--metrics-address <addr>', '/metrics and /stats/prometheus', '0.0.0.0:15020')
    .action(async (o: Omit<WaypointRunOptions, 'certChain'> & { cert: string }) => {
      const { cert, ...rest } = o;
      const { runWaypoint } = await import('../waypoint/main.ts'); // loaded only when run
      await runWaypoint({ ...rest, certChain: cert });
    });
}
